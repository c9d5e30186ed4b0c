package im.linnet.app

import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.produceState
import androidx.lifecycle.ViewModel
import androidx.lifecycle.viewModelScope
import im.linnet.app.ui.humanMessage
import im.linnet.bindings.Linnet
import im.linnet.bindings.LinnetException
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.launch

/** What every screen's model shares: the client, its intents, and the failure to show. */
abstract class LinnetViewModel(protected val linnet: Linnet) : ViewModel() {
    private val failure = MutableStateFlow<String?>(null)
    val error: StateFlow<String?> = failure.asStateFlow()

    // The core's calls may touch the database, so they run off the main thread; one at a
    // time and in order, so that "typing" cannot overtake "stopped typing".
    private val calls = Dispatchers.IO.limitedParallelism(1)

    fun dismissError() {
        failure.value = null
    }

    protected fun showError(message: String) {
        failure.value = message
    }

    /** Runs an intent; a failure goes to [onFailure] as a message for people. */
    protected fun intent(onFailure: (String) -> Unit = ::showError, block: suspend () -> Unit) {
        viewModelScope.launch(calls) {
            try {
                block()
            } catch (e: LinnetException) {
                onFailure(e.humanMessage())
            }
        }
    }
}

/** The wall clock for the screens' relative times, read every [periodMs]. */
@Composable
fun rememberNow(periodMs: Long): Long {
    val now by produceState(System.currentTimeMillis(), periodMs) {
        while (true) {
            value = System.currentTimeMillis()
            delay(periodMs)
        }
    }
    return now
}
