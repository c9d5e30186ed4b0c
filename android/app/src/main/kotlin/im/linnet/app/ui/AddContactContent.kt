package im.linnet.app.ui

import androidx.compose.foundation.horizontalScroll
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
import androidx.compose.material.icons.Icons
import androidx.compose.material.icons.automirrored.filled.ArrowBack
import androidx.compose.material3.Button
import androidx.compose.material3.CircularProgressIndicator
import androidx.compose.material3.ExperimentalMaterial3Api
import androidx.compose.material3.FilterChip
import androidx.compose.material3.Icon
import androidx.compose.material3.IconButton
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Scaffold
import androidx.compose.material3.Text
import androidx.compose.material3.TopAppBar
import androidx.compose.runtime.Composable
import androidx.compose.ui.Modifier
import androidx.compose.ui.text.input.KeyboardType
import androidx.compose.ui.unit.dp
import im.linnet.bindings.AccountRef

/** The add-contact form; [account] is the one the contact is added to. */
data class AddContactState(
    val accounts: List<AccountRef> = emptyList(),
    val account: Long? = null,
    val jid: String = "",
    val name: String = "",
    val busy: Boolean = false,
    val error: String? = null,
) {
    val canAdd: Boolean
        get() = !busy && account != null && jid.isNotBlank()
}

@OptIn(ExperimentalMaterial3Api::class)
@Composable
fun AddContactContent(
    state: AddContactState,
    onChange: (AddContactState) -> Unit,
    onAdd: () -> Unit,
    onBack: () -> Unit,
    onDismissError: () -> Unit,
) {
    Scaffold(
        topBar = {
            TopAppBar(
                title = { Text("Add a contact") },
                navigationIcon = {
                    IconButton(onClick = onBack) {
                        Icon(Icons.AutoMirrored.Filled.ArrowBack, contentDescription = "Back")
                    }
                },
            )
        },
    ) { padding ->
        Column(
            verticalArrangement = Arrangement.spacedBy(12.dp),
            modifier = Modifier.fillMaxSize().padding(padding).imePadding().padding(16.dp),
        ) {
            if (state.accounts.size > 1) {
                Text("Add to", style = MaterialTheme.typography.labelLarge)
                AccountChooser(state.accounts, state.account) { onChange(state.copy(account = it)) }
            }
            OutlinedTextField(
                value = state.jid,
                onValueChange = { onChange(state.copy(jid = it)) },
                label = { Text("Address") },
                placeholder = { Text("friend@example.org") },
                singleLine = true,
                keyboardOptions = KeyboardOptions(keyboardType = KeyboardType.Email),
                modifier = Modifier.fillMaxWidth(),
            )
            OutlinedTextField(
                value = state.name,
                onValueChange = { onChange(state.copy(name = it)) },
                label = { Text("Name (optional)") },
                singleLine = true,
                modifier = Modifier.fillMaxWidth(),
            )
            Text(
                "They will be asked to let you see when they are online.",
                style = MaterialTheme.typography.bodySmall,
            )
            ErrorBanner(state.error, onDismissError)
            Button(onClick = onAdd, enabled = state.canAdd, modifier = Modifier.fillMaxWidth()) {
                if (state.busy) {
                    CircularProgressIndicator(strokeWidth = 2.dp, modifier = Modifier.size(18.dp))
                } else {
                    Text("Add")
                }
            }
        }
    }
}

/** One chip per account, for screens that act for one of several. */
@Composable
fun AccountChooser(accounts: List<AccountRef>, selected: Long?, onSelect: (Long) -> Unit) {
    Row(
        horizontalArrangement = Arrangement.spacedBy(8.dp),
        modifier = Modifier.horizontalScroll(rememberScrollState()),
    ) {
        for (account in accounts) {
            FilterChip(
                selected = account.id == selected,
                onClick = { onSelect(account.id) },
                label = { Text(account.jid) },
            )
        }
    }
}
