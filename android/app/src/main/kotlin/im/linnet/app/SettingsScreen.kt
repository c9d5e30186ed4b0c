package im.linnet.app

import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import androidx.lifecycle.viewmodel.compose.viewModel
import im.linnet.app.ui.AccountSecurity
import im.linnet.app.ui.SettingsContent
import im.linnet.app.ui.SettingsState
import im.linnet.bindings.Linnet
import im.linnet.bindings.LinnetException
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update

/** Settings for [account] (the first account when null), looking up [peer]'s devices at once if given. */
class SettingsViewModel(linnet: Linnet, account: Long?, peer: String?) : LinnetViewModel(linnet) {
    private val form = MutableStateFlow(SettingsState(account = account, peer = peer.orEmpty()))
    val state: StateFlow<SettingsState> = form.asStateFlow()

    init {
        intent(::formError) {
            val accounts = linnet.accounts().map {
                // An account that never logged in has no OMEMO device yet.
                AccountSecurity(
                    id = it.id,
                    jid = it.jid,
                    fingerprint = orNull { linnet.ownFingerprint(it.id) },
                    verificationUri = orNull { linnet.ownVerificationUri(it.id) },
                )
            }
            form.update { s ->
                val chosen = s.account?.takeIf { id -> accounts.any { it.id == id } }
                s.copy(accounts = accounts, account = chosen ?: accounts.firstOrNull()?.id)
            }
            if (peer != null) lookUp()
        }
    }

    fun change(new: SettingsState) = form.update { new }

    fun clearError() = form.update { it.copy(error = null) }

    fun lookUp() {
        val s = form.value
        val account = s.account ?: return
        val jid = s.peer.trim()
        if (jid.isEmpty()) return
        intent(::formError) {
            val devices = linnet.omemoDevices(account, jid)
            form.update { it.copy(devices = devices, devicesOf = jid) }
        }
    }

    fun verify() {
        val s = form.value
        val account = s.account ?: return
        intent(::formError) {
            val count = linnet.verifyByUri(account, s.verificationUri.trim())
            val notice = if (count == 1u) "1 device verified." else "$count devices verified."
            form.update { it.copy(verificationUri = "", notice = notice) }
            // The devices shown may be among those just verified.
            if (form.value.devices != null) lookUp()
        }
    }

    private fun formError(message: String) = form.update { it.copy(error = message, notice = null) }

    private inline fun <T> orNull(call: () -> T): T? = try {
        call()
    } catch (e: LinnetException) {
        null
    }
}

@Composable
fun SettingsRoute(linnet: Linnet, account: Long?, peer: String?, onBack: () -> Unit) {
    val model = viewModel { SettingsViewModel(linnet, account, peer) }
    val state by model.state.collectAsStateWithLifecycle()
    SettingsContent(
        state = state,
        onChange = model::change,
        onLookUp = model::lookUp,
        onVerify = model::verify,
        onBack = onBack,
        onDismissError = model::clearError,
    )
}
