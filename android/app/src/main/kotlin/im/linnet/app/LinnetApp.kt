package im.linnet.app

import android.app.Application
import android.net.ConnectivityManager
import android.net.Network
import androidx.lifecycle.DefaultLifecycleObserver
import androidx.lifecycle.LifecycleOwner
import androidx.lifecycle.ProcessLifecycleOwner
import im.linnet.bindings.Linnet
import im.linnet.bindings.LinnetException
import java.io.File
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.MainScope
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/** The process's one client, as far as it has got. */
sealed interface ClientState {
    data object Opening : ClientState

    data class Ready(val linnet: Linnet, val hasAccounts: Boolean) : ClientState

    data class Failed(val error: LinnetException) : ClientState
}

/**
 * Holds the process's [Linnet] and tells it what only Android knows: whether the network is
 * there and whether the app is in the foreground. The client lives as long as the process.
 */
class LinnetApp : Application() {
    private val scope = MainScope()
    private val state = MutableStateFlow<ClientState>(ClientState.Opening)
    val client: StateFlow<ClientState> = state.asStateFlow()

    override fun onCreate() {
        super.onCreate()
        scope.launch {
            val dataDir = File(filesDir, "linnet").path
            val opened = try {
                // Opening reads the Keystore and the database: not on the main thread.
                withContext(Dispatchers.IO) {
                    val linnet = Linnet.open(dataDir, KeystoreKeyStore(this@LinnetApp))
                    linnet to linnet.accounts()
                }
            } catch (e: LinnetException) {
                state.value = ClientState.Failed(e)
                return@launch
            }
            val (linnet, accounts) = opened
            state.value = ClientState.Ready(linnet, accounts.isNotEmpty())

            ProcessLifecycleOwner.get().lifecycle.addObserver(object : DefaultLifecycleObserver {
                override fun onStart(owner: LifecycleOwner) = linnet.setForeground(true)

                override fun onStop(owner: LifecycleOwner) = linnet.setForeground(false)
            })
            getSystemService(ConnectivityManager::class.java)
                .registerDefaultNetworkCallback(object : ConnectivityManager.NetworkCallback() {
                    // When the default network is replaced, the old one's loss may be told
                    // after the new one's arrival: only losing the current one is offline.
                    private var current: Network? = null

                    override fun onAvailable(network: Network) {
                        current = network
                        linnet.networkChanged(true)
                    }

                    override fun onLost(network: Network) {
                        if (network == current) {
                            current = null
                            linnet.networkChanged(false)
                        }
                    }
                })

            // The core keeps accounts, not sessions, across restarts: log each in again.
            for (account in accounts) {
                launch {
                    try {
                        linnet.login(account.id)
                    } catch (e: LinnetException) {
                        // Shown by the chat list, as the account's connection state.
                    }
                }
            }
        }
    }
}
