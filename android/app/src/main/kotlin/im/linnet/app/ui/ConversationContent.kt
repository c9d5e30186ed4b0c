package im.linnet.app.ui

import androidx.compose.foundation.background
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Box
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.IntrinsicSize
import androidx.compose.foundation.layout.fillMaxHeight
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.imePadding
import androidx.compose.foundation.layout.navigationBarsPadding
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.height
import androidx.compose.foundation.layout.size
import androidx.compose.foundation.layout.width
import androidx.compose.foundation.layout.widthIn
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.LazyListState
import androidx.compose.foundation.lazy.items
import androidx.compose.foundation.lazy.rememberLazyListState
import androidx.compose.foundation.shape.RoundedCornerShape
import androidx.compose.foundation.text.KeyboardOptions
import androidx.compose.material.icons.Icons
import androidx.compose.material.icons.automirrored.filled.ArrowBack
import androidx.compose.material.icons.automirrored.filled.Send
import androidx.compose.material.icons.filled.AttachFile
import androidx.compose.material.icons.filled.Done
import androidx.compose.material.icons.filled.DoneAll
import androidx.compose.material.icons.filled.Error
import androidx.compose.material.icons.filled.Lock
import androidx.compose.material.icons.filled.Schedule
import androidx.compose.material.icons.filled.VerifiedUser
import androidx.compose.material.icons.filled.Warning
import androidx.compose.material3.CircularProgressIndicator
import androidx.compose.material3.ExperimentalMaterial3Api
import androidx.compose.material3.Icon
import androidx.compose.material3.IconButton
import androidx.compose.material3.LocalContentColor
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Scaffold
import androidx.compose.material3.Surface
import androidx.compose.material3.Text
import androidx.compose.material3.TopAppBar
import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.compose.runtime.rememberUpdatedState
import androidx.compose.runtime.snapshotFlow
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.vector.ImageVector
import androidx.compose.ui.text.font.FontStyle
import androidx.compose.ui.text.input.KeyboardCapitalization
import androidx.compose.ui.text.style.TextOverflow
import androidx.compose.ui.unit.dp
import im.linnet.bindings.Conversation
import im.linnet.bindings.DeliveryState
import im.linnet.bindings.DeviceTrust
import im.linnet.bindings.Direction
import im.linnet.bindings.Encryption
import im.linnet.bindings.Group
import im.linnet.bindings.JoinState
import im.linnet.bindings.Message
import kotlinx.coroutines.flow.distinctUntilChanged

/**
 * One conversation: its messages (newest at the bottom), the peer's typing, and the
 * composer. [conversation] is null until the first snapshot.
 */
@OptIn(ExperimentalMaterial3Api::class)
@Composable
fun ConversationContent(
    conversation: Conversation?,
    draft: String,
    nowMs: Long,
    error: String?,
    onDraftChange: (String) -> Unit,
    onSend: () -> Unit,
    onLoadOlder: () -> Unit,
    onBack: () -> Unit,
    onDevices: () -> Unit,
    onDismissError: () -> Unit,
) {
    val group = conversation?.group
    Scaffold(
        topBar = {
            TopAppBar(
                navigationIcon = {
                    IconButton(onClick = onBack) {
                        Icon(Icons.AutoMirrored.Filled.ArrowBack, contentDescription = "Back")
                    }
                },
                title = {
                    Column {
                        Text(
                            conversation?.let { it.name ?: it.peer }.orEmpty(),
                            maxLines = 1,
                            overflow = TextOverflow.Ellipsis,
                        )
                        val subtitle = when {
                            conversation?.peerTyping == true -> "typing…"
                            group != null -> groupText(group)
                            else -> null
                        }
                        if (subtitle != null) {
                            Text(subtitle, style = MaterialTheme.typography.bodySmall, maxLines = 1)
                        }
                    }
                },
                actions = {
                    if (conversation != null && group == null) {
                        IconButton(onClick = onDevices) {
                            Icon(Icons.Filled.VerifiedUser, contentDescription = "Encryption keys")
                        }
                    }
                },
            )
        },
        bottomBar = { Composer(draft, onDraftChange, onSend) },
    ) { padding ->
        Column(Modifier.fillMaxSize().padding(padding)) {
            ErrorBanner(error, onDismissError)
            group?.removed?.let { reason ->
                Text(
                    "You are no longer in this group: $reason",
                    color = MaterialTheme.colorScheme.error,
                    modifier = Modifier.padding(horizontal = 16.dp, vertical = 8.dp),
                )
            }
            if (conversation != null) {
                Messages(conversation, nowMs, onLoadOlder, Modifier.weight(1f))
            }
        }
    }
}

private fun groupText(group: Group): String = when (group.joined) {
    JoinState.JOINED -> group.subject ?: "${group.occupants} in the group"
    JoinState.JOINING -> "Joining…"
    JoinState.NOT_JOINED -> "Not joined"
}

@Composable
private fun Messages(conversation: Conversation, nowMs: Long, onLoadOlder: () -> Unit, modifier: Modifier) {
    val listState = rememberLazyListState()
    val messages = conversation.messages
    LoadOlderAtTop(listState, conversation.hasMore && !conversation.loadingOlder, onLoadOlder)
    // Follow new messages while the newest is in view; leave the reader alone otherwise.
    val newest = messages.lastOrNull()?.id
    LaunchedEffect(newest) {
        if (listState.firstVisibleItemIndex <= 1) listState.animateScrollToItem(0)
    }
    // Reversed, so that the list starts at the bottom and stays anchored there.
    LazyColumn(
        state = listState,
        reverseLayout = true,
        verticalArrangement = Arrangement.spacedBy(4.dp, Alignment.Bottom),
        modifier = modifier.fillMaxWidth(),
    ) {
        items(messages.asReversed(), key = { it.id }) { message ->
            MessageBubble(message, inGroup = conversation.group != null, nowMs = nowMs)
        }
        if (conversation.loadingOlder) {
            item(key = "loading older") {
                Box(Modifier.fillMaxWidth().padding(8.dp), contentAlignment = Alignment.Center) {
                    CircularProgressIndicator(strokeWidth = 2.dp, modifier = Modifier.size(24.dp))
                }
            }
        }
    }
}

/** Asks for older messages when the oldest ones come into view and more exist. */
@Composable
private fun LoadOlderAtTop(listState: LazyListState, canLoad: Boolean, onLoadOlder: () -> Unit) {
    val canLoadNow by rememberUpdatedState(canLoad)
    val load by rememberUpdatedState(onLoadOlder)
    LaunchedEffect(listState) {
        snapshotFlow {
            val layout = listState.layoutInfo
            val topmost = layout.visibleItemsInfo.lastOrNull()?.index ?: -1
            // Also true when the messages loaded so far do not fill the screen.
            canLoadNow && topmost >= layout.totalItemsCount - 3
        }
            .distinctUntilChanged()
            .collect { if (it) load() }
    }
}

@Composable
private fun MessageBubble(message: Message, inGroup: Boolean, nowMs: Long) {
    val outgoing = message.direction == Direction.OUTGOING
    val colors = MaterialTheme.colorScheme
    Row(
        horizontalArrangement = if (outgoing) Arrangement.End else Arrangement.Start,
        modifier = Modifier.fillMaxWidth().padding(horizontal = 8.dp),
    ) {
        Surface(
            color = if (outgoing) colors.primaryContainer else colors.surfaceContainerHigh,
            shape = RoundedCornerShape(16.dp),
            modifier = Modifier.widthIn(max = 320.dp),
        ) {
            Column(Modifier.padding(horizontal = 12.dp, vertical = 8.dp)) {
                if (inGroup && !outgoing) {
                    Text(
                        message.senderNick ?: message.sender,
                        style = MaterialTheme.typography.labelMedium,
                        color = colors.primary,
                    )
                }
                if (message.privateWith != null) {
                    Text("Private message", style = MaterialTheme.typography.labelSmall, color = colors.tertiary)
                }
                message.replyTo?.let { reply ->
                    // The quoted message, set off by a bar as people know it from mail.
                    Row(Modifier.height(IntrinsicSize.Min).padding(bottom = 4.dp)) {
                        Box(Modifier.width(3.dp).fillMaxHeight().background(colors.primary, RoundedCornerShape(2.dp)))
                        Text(
                            "${reply.sender}: ${reply.excerpt}",
                            style = MaterialTheme.typography.bodySmall,
                            color = colors.onSurfaceVariant,
                            maxLines = 2,
                            overflow = TextOverflow.Ellipsis,
                            modifier = Modifier.padding(start = 8.dp),
                        )
                    }
                }
                MessageBody(message)
                if (message.reactions.isNotEmpty()) {
                    Text(
                        message.reactions.joinToString("  ") { "${it.emoji} ${it.count}" },
                        style = MaterialTheme.typography.labelMedium,
                    )
                }
                MessageFooter(message, outgoing, nowMs, Modifier.align(Alignment.End))
                val failure = message.error ?: "Not sent".takeIf { message.state == DeliveryState.FAILED }
                if (failure != null) {
                    Text(failure, style = MaterialTheme.typography.bodySmall, color = colors.error)
                }
            }
        }
    }
}

@Composable
private fun MessageBody(message: Message) {
    val file = message.file
    when {
        message.retracted -> Text(
            "This message was deleted",
            fontStyle = FontStyle.Italic,
            color = MaterialTheme.colorScheme.onSurfaceVariant,
        )
        // With a file, the body is its address: the name says more.
        file != null -> {
            Row(verticalAlignment = Alignment.CenterVertically, horizontalArrangement = Arrangement.spacedBy(4.dp)) {
                Icon(Icons.Filled.AttachFile, contentDescription = "File", modifier = Modifier.size(18.dp))
                Text(file.name)
            }
            transferText(file)?.let { Text(it, style = MaterialTheme.typography.bodySmall) }
        }
        else -> Text(styledBody(message.body, message.spans, MaterialTheme.colorScheme.onSurfaceVariant))
    }
}

@Composable
private fun MessageFooter(message: Message, outgoing: Boolean, nowMs: Long, modifier: Modifier) {
    Row(
        verticalAlignment = Alignment.CenterVertically,
        horizontalArrangement = Arrangement.spacedBy(4.dp),
        modifier = modifier.padding(top = 2.dp),
    ) {
        val small = Modifier.size(14.dp)
        if (message.edited) {
            Text("edited", style = MaterialTheme.typography.labelSmall)
        }
        Text(formatTime(message.timestampMs, nowMs), style = MaterialTheme.typography.labelSmall)
        if (message.encryption != Encryption.PLAIN) {
            Icon(Icons.Filled.Lock, contentDescription = "Encrypted", modifier = small)
        }
        when (message.trust) {
            DeviceTrust.UNDECIDED -> Icon(
                Icons.Filled.Warning,
                contentDescription = "From a device not trusted yet",
                tint = MaterialTheme.colorScheme.error,
                modifier = small,
            )
            DeviceTrust.DISTRUSTED -> Icon(
                Icons.Filled.Warning,
                contentDescription = "From a distrusted device",
                tint = MaterialTheme.colorScheme.error,
                modifier = small,
            )
            else -> {}
        }
        if (outgoing) {
            val (icon, description) = deliveryIcon(message.state)
            val tint = when (message.state) {
                DeliveryState.READ -> MaterialTheme.colorScheme.primary
                DeliveryState.FAILED -> MaterialTheme.colorScheme.error
                else -> LocalContentColor.current
            }
            Icon(icon, contentDescription = description, tint = tint, modifier = small)
        }
    }
}

private fun deliveryIcon(state: DeliveryState): Pair<ImageVector, String> = when (state) {
    DeliveryState.PENDING -> Icons.Filled.Schedule to "Sending"
    DeliveryState.SENT -> Icons.Filled.Done to "Sent"
    DeliveryState.DELIVERED -> Icons.Filled.DoneAll to "Delivered"
    DeliveryState.READ -> Icons.Filled.DoneAll to "Read"
    DeliveryState.FAILED -> Icons.Filled.Error to "Not sent"
}

@Composable
private fun Composer(draft: String, onDraftChange: (String) -> Unit, onSend: () -> Unit) {
    Surface(tonalElevation = 3.dp) {
        Row(
            verticalAlignment = Alignment.CenterVertically,
            modifier = Modifier
                .navigationBarsPadding()
                .imePadding()
                .padding(8.dp),
        ) {
            OutlinedTextField(
                value = draft,
                onValueChange = onDraftChange,
                placeholder = { Text("Message") },
                maxLines = 6,
                keyboardOptions = KeyboardOptions(capitalization = KeyboardCapitalization.Sentences),
                modifier = Modifier.weight(1f),
            )
            IconButton(onClick = onSend, enabled = draft.isNotBlank()) {
                Icon(Icons.AutoMirrored.Filled.Send, contentDescription = "Send")
            }
        }
    }
}
