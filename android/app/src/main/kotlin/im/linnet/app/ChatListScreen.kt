package im.linnet.app

import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import androidx.lifecycle.viewModelScope
import androidx.lifecycle.viewmodel.compose.viewModel
import im.linnet.app.ui.ChatListContent
import im.linnet.bindings.ChatList
import im.linnet.bindings.ConnectionWaiting
import im.linnet.bindings.Linnet
import kotlinx.coroutines.flow.SharingStarted
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.stateIn

class ChatListViewModel(linnet: Linnet) : LinnetViewModel(linnet) {
    /** Null until the first snapshot, which the core delivers at once. */
    val chatList: StateFlow<ChatList?> =
        linnet.chatList.stateIn(viewModelScope, SharingStarted.WhileSubscribed(5_000), null)

    fun approve(account: Long, jid: String) = intent { linnet.approveContact(account, jid) }

    fun deny(account: Long, jid: String) = intent { linnet.denyContact(account, jid) }
}

@Composable
fun ChatListRoute(
    linnet: Linnet,
    onOpen: (conversation: Long) -> Unit,
    onAddContact: () -> Unit,
    onAddAccount: () -> Unit,
    onSettings: () -> Unit,
) {
    val model = viewModel { ChatListViewModel(linnet) }
    val chatList by model.chatList.collectAsStateWithLifecycle()
    val error by model.error.collectAsStateWithLifecycle()
    // Every second only while a retry is being counted down.
    val counting = chatList?.accounts.orEmpty().any { it.connection is ConnectionWaiting }
    ChatListContent(
        chatList = chatList,
        nowMs = rememberNow(if (counting) 1_000 else 60_000),
        error = error,
        onOpen = { onOpen(it.id) },
        onApprove = model::approve,
        onDeny = model::deny,
        onAddContact = onAddContact,
        onAddAccount = onAddAccount,
        onSettings = onSettings,
        onDismissError = model::dismissError,
    )
}
