package im.linnet.app

import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.lifecycle.Lifecycle
import androidx.lifecycle.compose.LocalLifecycleOwner
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import androidx.lifecycle.compose.currentStateAsState
import androidx.lifecycle.viewModelScope
import androidx.lifecycle.viewmodel.compose.viewModel
import im.linnet.app.ui.ConversationContent
import im.linnet.app.ui.humanMessage
import im.linnet.bindings.Conversation
import im.linnet.bindings.Linnet
import im.linnet.bindings.LinnetException
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.SharingStarted
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.catch
import kotlinx.coroutines.flow.stateIn

class ConversationViewModel(linnet: Linnet, private val id: Long) : LinnetViewModel(linnet) {
    /** Null until the first snapshot (or for good, with an error, if there is no such conversation). */
    val conversation: StateFlow<Conversation?> = linnet.conversation(id)
        .catch { e -> if (e is LinnetException) showError(e.humanMessage()) else throw e }
        .stateIn(viewModelScope, SharingStarted.WhileSubscribed(5_000), null)

    private val text = MutableStateFlow("")
    val draft: StateFlow<String> = text.asStateFlow()

    fun changeDraft(value: String) {
        text.value = value
        // The core sends a chat state only when this changes.
        intent { linnet.setTyping(id, value.isNotBlank()) }
    }

    fun send() {
        val target = conversation.value ?: return
        val body = text.value
        if (body.isBlank()) return
        text.value = ""
        intent(onFailure = { message ->
            // Nothing typed is lost: the text comes back unless something new was typed.
            text.compareAndSet("", body)
            showError(message)
        }) {
            linnet.sendMessage(target.account, target.peer, body)
            linnet.setTyping(id, false)
        }
    }

    fun markRead() = intent { linnet.markRead(id) }

    fun loadOlder() = intent { linnet.loadOlder(id) }

    override fun onCleared() {
        try {
            linnet.setTyping(id, false)
        } catch (e: LinnetException) {
            // The screen is gone: nobody to tell.
        }
    }
}

@Composable
fun ConversationRoute(
    linnet: Linnet,
    id: Long,
    onBack: () -> Unit,
    onDevices: (account: Long, peer: String) -> Unit,
) {
    val model = viewModel { ConversationViewModel(linnet, id) }
    val conversation by model.conversation.collectAsStateWithLifecycle()
    val draft by model.draft.collectAsStateWithLifecycle()
    val error by model.error.collectAsStateWithLifecycle()

    // What arrives while the conversation is on screen has been seen.
    val lifecycle by LocalLifecycleOwner.current.lifecycle.currentStateAsState()
    val visible = lifecycle.isAtLeast(Lifecycle.State.RESUMED)
    val unread = conversation?.unread ?: 0u
    LaunchedEffect(visible, unread) {
        if (visible && unread > 0u) model.markRead()
    }

    ConversationContent(
        conversation = conversation,
        draft = draft,
        nowMs = rememberNow(60_000),
        error = error,
        onDraftChange = model::changeDraft,
        onSend = model::send,
        onLoadOlder = model::loadOlder,
        onBack = onBack,
        onDevices = { conversation?.let { onDevices(it.account, it.peer) } },
        onDismissError = model::dismissError,
    )
}
