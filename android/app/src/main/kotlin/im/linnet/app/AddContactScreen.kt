package im.linnet.app

import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import androidx.lifecycle.viewmodel.compose.viewModel
import im.linnet.app.ui.AddContactContent
import im.linnet.app.ui.AddContactState
import im.linnet.bindings.Linnet
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update

class AddContactViewModel(linnet: Linnet) : LinnetViewModel(linnet) {
    private val form = MutableStateFlow(AddContactState())
    val state: StateFlow<AddContactState> = form.asStateFlow()

    private val added = MutableStateFlow<Long?>(null)

    /** The new contact's conversation, once added. */
    val conversation: StateFlow<Long?> = added.asStateFlow()

    init {
        intent(::formError) {
            val accounts = linnet.accounts()
            form.update { it.copy(accounts = accounts, account = it.account ?: accounts.firstOrNull()?.id) }
        }
    }

    fun change(new: AddContactState) = form.update { new.copy(busy = it.busy) }

    fun clearError() = form.update { it.copy(error = null) }

    fun add() {
        val s = form.value
        val account = s.account
        if (!s.canAdd || account == null) return
        form.update { it.copy(busy = true, error = null) }
        intent(onFailure = { message -> form.update { it.copy(busy = false, error = message) } }) {
            val jid = s.jid.trim()
            linnet.addContact(account, jid, s.name.trim().ifEmpty { null })
            added.value = linnet.openConversation(account, jid)
        }
    }

    private fun formError(message: String) = form.update { it.copy(error = message) }
}

@Composable
fun AddContactRoute(linnet: Linnet, onAdded: (conversation: Long) -> Unit, onBack: () -> Unit) {
    val model = viewModel { AddContactViewModel(linnet) }
    val state by model.state.collectAsStateWithLifecycle()
    val conversation by model.conversation.collectAsStateWithLifecycle()
    LaunchedEffect(conversation) {
        conversation?.let(onAdded)
    }
    AddContactContent(
        state = state,
        onChange = model::change,
        onAdd = model::add,
        onBack = onBack,
        onDismissError = model::clearError,
    )
}
