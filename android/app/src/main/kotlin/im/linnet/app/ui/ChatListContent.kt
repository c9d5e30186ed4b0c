package im.linnet.app.ui

import androidx.compose.foundation.background
import androidx.compose.foundation.clickable
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Box
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.size
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.foundation.shape.CircleShape
import androidx.compose.material.icons.Icons
import androidx.compose.material.icons.filled.Add
import androidx.compose.material.icons.filled.AttachFile
import androidx.compose.material.icons.filled.PersonAdd
import androidx.compose.material.icons.filled.Settings
import androidx.compose.material3.Badge
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.ExperimentalMaterial3Api
import androidx.compose.material3.FloatingActionButton
import androidx.compose.material3.Icon
import androidx.compose.material3.IconButton
import androidx.compose.material3.ListItem
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.Scaffold
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.material3.TopAppBar
import androidx.compose.runtime.Composable
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.Color
import androidx.compose.ui.text.style.TextAlign
import androidx.compose.ui.text.style.TextOverflow
import androidx.compose.ui.unit.dp
import im.linnet.bindings.Account
import im.linnet.bindings.ChatItem
import im.linnet.bindings.ChatList
import im.linnet.bindings.Connection
import im.linnet.bindings.ConnectionConnecting
import im.linnet.bindings.ConnectionOffline
import im.linnet.bindings.ConnectionOnline
import im.linnet.bindings.ConnectionWaiting

/**
 * The chat list: each account's connection, contact requests, then the conversations, most
 * recent first as the core orders them. [chatList] is null until the first snapshot.
 */
@OptIn(ExperimentalMaterial3Api::class)
@Composable
fun ChatListContent(
    chatList: ChatList?,
    nowMs: Long,
    error: String?,
    onOpen: (ChatItem) -> Unit,
    onApprove: (account: Long, jid: String) -> Unit,
    onDeny: (account: Long, jid: String) -> Unit,
    onAddContact: () -> Unit,
    onAddAccount: () -> Unit,
    onSettings: () -> Unit,
    onDismissError: () -> Unit,
) {
    val accounts = chatList?.accounts.orEmpty()
    Scaffold(
        topBar = {
            Column {
                TopAppBar(
                    title = { Text("Chats") },
                    actions = {
                        IconButton(onClick = onAddAccount) {
                            Icon(Icons.Filled.PersonAdd, contentDescription = "Add an account")
                        }
                        IconButton(onClick = onSettings) {
                            Icon(Icons.Filled.Settings, contentDescription = "Settings")
                        }
                    },
                )
                accounts.forEach { AccountStatus(it, nowMs) }
            }
        },
        floatingActionButton = {
            if (accounts.isNotEmpty()) {
                FloatingActionButton(onClick = onAddContact) {
                    Icon(Icons.Filled.Add, contentDescription = "Add a contact")
                }
            }
        },
    ) { padding ->
        LazyColumn(contentPadding = padding, modifier = Modifier.fillMaxSize()) {
            item { ErrorBanner(error, onDismissError) }
            for (account in accounts) {
                items(account.subscriptionRequests, key = { "request ${account.id} $it" }) { jid ->
                    SubscriptionRequest(
                        jid = jid,
                        toAccount = account.jid.takeIf { accounts.size > 1 },
                        onApprove = { onApprove(account.id, jid) },
                        onDeny = { onDeny(account.id, jid) },
                    )
                }
            }
            items(chatList?.conversations.orEmpty(), key = { it.id }) { chat ->
                ChatRow(chat, nowMs, onClick = { onOpen(chat) })
            }
            if (chatList != null && chatList.conversations.isEmpty()) {
                item {
                    Text(
                        "No conversations yet. Add a contact with the + button.",
                        textAlign = TextAlign.Center,
                        style = MaterialTheme.typography.bodyMedium,
                        modifier = Modifier.fillMaxWidth().padding(32.dp),
                    )
                }
            }
        }
    }
}

@Composable
private fun AccountStatus(account: Account, nowMs: Long) {
    val text = connectionText(account.connection, nowMs) + if (account.catchingUp) ", catching up" else ""
    Row(
        verticalAlignment = Alignment.CenterVertically,
        horizontalArrangement = Arrangement.spacedBy(8.dp),
        modifier = Modifier.fillMaxWidth().padding(horizontal = 16.dp, vertical = 2.dp),
    ) {
        Box(Modifier.size(8.dp).background(connectionColor(account.connection), CircleShape))
        Text(
            "${account.jid}: $text",
            style = MaterialTheme.typography.bodySmall,
            maxLines = 1,
            overflow = TextOverflow.Ellipsis,
        )
    }
}

@Composable
private fun connectionColor(connection: Connection): Color = when (connection) {
    is ConnectionOnline -> MaterialTheme.colorScheme.primary
    is ConnectionConnecting, is ConnectionWaiting -> MaterialTheme.colorScheme.tertiary
    is ConnectionOffline ->
        if (connection.reason == null) MaterialTheme.colorScheme.outline else MaterialTheme.colorScheme.error
}

@Composable
private fun SubscriptionRequest(jid: String, toAccount: String?, onApprove: () -> Unit, onDeny: () -> Unit) {
    Card(Modifier.fillMaxWidth().padding(horizontal = 16.dp, vertical = 4.dp)) {
        Column(Modifier.padding(16.dp)) {
            Text("$jid would like to add you as a contact", style = MaterialTheme.typography.bodyMedium)
            if (toAccount != null) {
                Text("to $toAccount", style = MaterialTheme.typography.bodySmall)
            }
            Row(horizontalArrangement = Arrangement.spacedBy(8.dp), modifier = Modifier.align(Alignment.End)) {
                TextButton(onClick = onDeny) { Text("Deny") }
                Button(onClick = onApprove) { Text("Approve") }
            }
        }
    }
}

@Composable
private fun ChatRow(chat: ChatItem, nowMs: Long, onClick: () -> Unit) {
    val title = chat.name ?: chat.peer
    val last = chat.lastMessage
    val at = last?.timestampMs ?: chat.lastActivityMs
    ListItem(
        headlineContent = { Text(title, maxLines = 1, overflow = TextOverflow.Ellipsis) },
        supportingContent = if (last != null) {
            {
                Row(verticalAlignment = Alignment.CenterVertically, horizontalArrangement = Arrangement.spacedBy(2.dp)) {
                    if (last.file != null) {
                        Icon(Icons.Filled.AttachFile, contentDescription = "File", modifier = Modifier.size(16.dp))
                    }
                    Text(previewText(last), maxLines = 1, overflow = TextOverflow.Ellipsis)
                }
            }
        } else {
            null
        },
        leadingContent = { Avatar(title, group = chat.group) },
        trailingContent = {
            Column(horizontalAlignment = Alignment.End, verticalArrangement = Arrangement.spacedBy(4.dp)) {
                if (at > 0) {
                    Text(formatTime(at, nowMs), style = MaterialTheme.typography.labelSmall)
                }
                if (chat.unread > 0u) {
                    Badge { Text(chat.unread.toString()) }
                }
            }
        },
        modifier = Modifier.clickable(onClick = onClick),
    )
}
