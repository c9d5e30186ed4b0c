package im.linnet.app

import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import androidx.lifecycle.viewmodel.compose.viewModel
import im.linnet.app.ui.OnboardingContent
import im.linnet.app.ui.OnboardingMode
import im.linnet.app.ui.OnboardingState
import im.linnet.bindings.Linnet
import im.linnet.bindings.NetworkException
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update

class OnboardingViewModel(linnet: Linnet) : LinnetViewModel(linnet) {
    private val form = MutableStateFlow(OnboardingState())
    val state: StateFlow<OnboardingState> = form.asStateFlow()

    private val finished = MutableStateFlow(false)
    val done: StateFlow<Boolean> = finished.asStateFlow()

    // An account added by a log-in attempt whose first connection failed: trying again with
    // the same address and password logs it in rather than adding it twice.
    private var added: Triple<String, String, Long>? = null

    fun change(new: OnboardingState) = form.update { new.copy(busy = it.busy) }

    fun clearError() = form.update { it.copy(error = null) }

    fun submit() {
        val s = form.value
        if (!s.canSubmit) return
        form.update { it.copy(busy = true, error = null) }
        intent(onFailure = { message -> form.update { it.copy(busy = false, error = message) } }) {
            when (s.mode) {
                OnboardingMode.REGISTER -> {
                    val account = linnet.registerAccount("${s.username.trim()}@${s.domain.trim()}", s.password)
                    // The account exists now; after a network failure the core keeps trying.
                    try {
                        linnet.login(account)
                    } catch (e: NetworkException) {
                        // Shown in the chat list as the account's connection state.
                    }
                }
                OnboardingMode.LOG_IN -> {
                    val jid = s.jid.trim()
                    val account = added?.takeIf { it.first == jid && it.second == s.password }?.third
                        ?: linnet.addAccount(jid, s.password).also { added = Triple(jid, s.password, it) }
                    linnet.login(account)
                }
            }
            form.update { it.copy(busy = false) }
            finished.value = true
        }
    }
}

@Composable
fun OnboardingRoute(linnet: Linnet, onDone: () -> Unit) {
    val model = viewModel { OnboardingViewModel(linnet) }
    val state by model.state.collectAsStateWithLifecycle()
    val done by model.done.collectAsStateWithLifecycle()
    LaunchedEffect(done) {
        if (done) onDone()
    }
    OnboardingContent(
        state = state,
        onChange = model::change,
        onSubmit = model::submit,
        onDismissError = model::clearError,
    )
}
