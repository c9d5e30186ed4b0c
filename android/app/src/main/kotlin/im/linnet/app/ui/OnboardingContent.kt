package im.linnet.app.ui

import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.imePadding
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.size
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.text.KeyboardOptions
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.CircularProgressIndicator
import androidx.compose.material3.ExperimentalMaterial3Api
import androidx.compose.material3.FilterChip
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Scaffold
import androidx.compose.material3.Text
import androidx.compose.material3.TopAppBar
import androidx.compose.runtime.Composable
import androidx.compose.ui.Modifier
import androidx.compose.ui.text.input.KeyboardType
import androidx.compose.ui.text.input.PasswordVisualTransformation
import androidx.compose.ui.unit.dp

enum class OnboardingMode { REGISTER, LOG_IN }

/** The onboarding form as the user has filled it in. */
data class OnboardingState(
    val mode: OnboardingMode = OnboardingMode.REGISTER,
    val username: String = "",
    val domain: String = "",
    val jid: String = "",
    val password: String = "",
    val passwordAgain: String = "",
    val busy: Boolean = false,
    val error: String? = null,
) {
    val passwordsDiffer: Boolean
        get() = mode == OnboardingMode.REGISTER && passwordAgain.isNotEmpty() && password != passwordAgain

    val canSubmit: Boolean
        get() = !busy && password.isNotEmpty() && when (mode) {
            OnboardingMode.REGISTER -> username.isNotBlank() && domain.isNotBlank() && password == passwordAgain
            OnboardingMode.LOG_IN -> jid.isNotBlank()
        }
}

/**
 * Creating an account on a server of the user's choice (in-band registration: a user name
 * and a password, no phone number), or logging in to one they have.
 */
@OptIn(ExperimentalMaterial3Api::class)
@Composable
fun OnboardingContent(
    state: OnboardingState,
    onChange: (OnboardingState) -> Unit,
    onSubmit: () -> Unit,
    onDismissError: () -> Unit,
) {
    Scaffold(topBar = { TopAppBar(title = { Text("Welcome to Linnet") }) }) { padding ->
        Column(
            verticalArrangement = Arrangement.spacedBy(12.dp),
            modifier = Modifier
                .fillMaxSize()
                .padding(padding)
                .imePadding()
                .verticalScroll(rememberScrollState())
                .padding(16.dp),
        ) {
            Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
                FilterChip(
                    selected = state.mode == OnboardingMode.REGISTER,
                    onClick = { onChange(state.copy(mode = OnboardingMode.REGISTER, error = null)) },
                    label = { Text("New account") },
                )
                FilterChip(
                    selected = state.mode == OnboardingMode.LOG_IN,
                    onClick = { onChange(state.copy(mode = OnboardingMode.LOG_IN, error = null)) },
                    label = { Text("I have an account") },
                )
            }
            when (state.mode) {
                OnboardingMode.REGISTER -> {
                    Text(
                        "Pick any XMPP server that lets people sign up, and a user name on it. " +
                            "No phone number and no e-mail address are needed.",
                        style = MaterialTheme.typography.bodyMedium,
                    )
                    OutlinedTextField(
                        value = state.username,
                        onValueChange = { onChange(state.copy(username = it)) },
                        label = { Text("User name") },
                        singleLine = true,
                        modifier = Modifier.fillMaxWidth(),
                    )
                    OutlinedTextField(
                        value = state.domain,
                        onValueChange = { onChange(state.copy(domain = it)) },
                        label = { Text("Server") },
                        placeholder = { Text("example.org") },
                        singleLine = true,
                        keyboardOptions = KeyboardOptions(keyboardType = KeyboardType.Uri),
                        modifier = Modifier.fillMaxWidth(),
                    )
                    if (state.username.isNotBlank() && state.domain.isNotBlank()) {
                        Text(
                            "Your address will be ${state.username.trim()}@${state.domain.trim()}",
                            style = MaterialTheme.typography.bodySmall,
                        )
                    }
                }
                OnboardingMode.LOG_IN -> OutlinedTextField(
                    value = state.jid,
                    onValueChange = { onChange(state.copy(jid = it)) },
                    label = { Text("Address") },
                    placeholder = { Text("you@example.org") },
                    singleLine = true,
                    keyboardOptions = KeyboardOptions(keyboardType = KeyboardType.Email),
                    modifier = Modifier.fillMaxWidth(),
                )
            }
            OutlinedTextField(
                value = state.password,
                onValueChange = { onChange(state.copy(password = it)) },
                label = { Text("Password") },
                singleLine = true,
                visualTransformation = PasswordVisualTransformation(),
                keyboardOptions = KeyboardOptions(keyboardType = KeyboardType.Password),
                modifier = Modifier.fillMaxWidth(),
            )
            if (state.mode == OnboardingMode.REGISTER) {
                OutlinedTextField(
                    value = state.passwordAgain,
                    onValueChange = { onChange(state.copy(passwordAgain = it)) },
                    label = { Text("Password again") },
                    singleLine = true,
                    isError = state.passwordsDiffer,
                    supportingText = if (state.passwordsDiffer) {
                        { Text("The passwords differ") }
                    } else {
                        null
                    },
                    visualTransformation = PasswordVisualTransformation(),
                    keyboardOptions = KeyboardOptions(keyboardType = KeyboardType.Password),
                    modifier = Modifier.fillMaxWidth(),
                )
            }
            ErrorBanner(state.error, onDismissError)
            Button(onClick = onSubmit, enabled = state.canSubmit, modifier = Modifier.fillMaxWidth()) {
                if (state.busy) {
                    CircularProgressIndicator(strokeWidth = 2.dp, modifier = Modifier.size(18.dp))
                } else {
                    Text(if (state.mode == OnboardingMode.REGISTER) "Create account" else "Log in")
                }
            }
        }
    }
}
