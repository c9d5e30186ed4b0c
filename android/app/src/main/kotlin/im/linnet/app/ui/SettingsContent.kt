package im.linnet.app.ui

import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.ColumnScope
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.imePadding
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.foundation.text.KeyboardOptions
import androidx.compose.foundation.text.selection.SelectionContainer
import androidx.compose.material.icons.Icons
import androidx.compose.material.icons.automirrored.filled.ArrowBack
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.ExperimentalMaterial3Api
import androidx.compose.material3.HorizontalDivider
import androidx.compose.material3.Icon
import androidx.compose.material3.IconButton
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Scaffold
import androidx.compose.material3.Text
import androidx.compose.material3.TopAppBar
import androidx.compose.runtime.Composable
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.text.font.FontFamily
import androidx.compose.ui.text.input.KeyboardType
import androidx.compose.ui.unit.dp
import im.linnet.bindings.AccountRef
import im.linnet.bindings.Device
import im.linnet.bindings.DeviceTrust

/** What an account shows of itself: null where the core had nothing yet (never logged in). */
data class AccountSecurity(
    val id: Long,
    val jid: String,
    val fingerprint: String?,
    val verificationUri: String?,
)

data class SettingsState(
    val accounts: List<AccountSecurity> = emptyList(),
    /** The account the device look-up and the verification act for. */
    val account: Long? = null,
    val peer: String = "",
    /** The devices of the last look-up; null before one. */
    val devices: List<Device>? = null,
    val devicesOf: String? = null,
    val verificationUri: String = "",
    val notice: String? = null,
    val error: String? = null,
)

/**
 * Each account's own fingerprint and verification link, a contact's devices with their
 * fingerprints and trust, and verifying a contact by the link they show.
 */
@OptIn(ExperimentalMaterial3Api::class)
@Composable
fun SettingsContent(
    state: SettingsState,
    onChange: (SettingsState) -> Unit,
    onLookUp: () -> Unit,
    onVerify: () -> Unit,
    onBack: () -> Unit,
    onDismissError: () -> Unit,
) {
    Scaffold(
        topBar = {
            TopAppBar(
                title = { Text("Settings") },
                navigationIcon = {
                    IconButton(onClick = onBack) {
                        Icon(Icons.AutoMirrored.Filled.ArrowBack, contentDescription = "Back")
                    }
                },
            )
        },
    ) { padding ->
        LazyColumn(
            contentPadding = padding,
            verticalArrangement = Arrangement.spacedBy(8.dp),
            modifier = Modifier.fillMaxSize().imePadding(),
        ) {
            item { ErrorBanner(state.error, onDismissError) }
            items(state.accounts, key = { it.id }) { OwnAccount(it) }
            item {
                Section("A contact's devices") {
                    if (state.accounts.size > 1) {
                        AccountChooser(state.accounts.map { AccountRef(it.id, it.jid) }, state.account) {
                            onChange(state.copy(account = it))
                        }
                    }
                    Row(verticalAlignment = Alignment.CenterVertically, horizontalArrangement = Arrangement.spacedBy(8.dp)) {
                        OutlinedTextField(
                            value = state.peer,
                            onValueChange = { onChange(state.copy(peer = it)) },
                            label = { Text("Address") },
                            singleLine = true,
                            keyboardOptions = KeyboardOptions(keyboardType = KeyboardType.Email),
                            modifier = Modifier.weight(1f),
                        )
                        Button(onClick = onLookUp, enabled = state.account != null && state.peer.isNotBlank()) {
                            Text("Show")
                        }
                    }
                    // A contact has a handful of devices: they stay in the card, not rows of their own.
                    val devices = state.devices
                    if (devices != null && devices.isEmpty()) {
                        Text("No devices known for ${state.devicesOf.orEmpty()}.", style = MaterialTheme.typography.bodyMedium)
                    }
                    devices?.forEach { device ->
                        HorizontalDivider()
                        DeviceRow(device)
                    }
                }
            }
            item {
                Section("Verify a contact") {
                    Text(
                        "Paste the verification link your contact shows in their settings.",
                        style = MaterialTheme.typography.bodySmall,
                    )
                    OutlinedTextField(
                        value = state.verificationUri,
                        onValueChange = { onChange(state.copy(verificationUri = it)) },
                        label = { Text("xmpp: link") },
                        singleLine = true,
                        keyboardOptions = KeyboardOptions(keyboardType = KeyboardType.Uri),
                        modifier = Modifier.fillMaxWidth(),
                    )
                    Button(
                        onClick = onVerify,
                        enabled = state.account != null && state.verificationUri.isNotBlank(),
                        modifier = Modifier.align(Alignment.End),
                    ) {
                        Text("Verify")
                    }
                    state.notice?.let { Text(it, style = MaterialTheme.typography.bodyMedium) }
                }
            }
        }
    }
}

@Composable
private fun OwnAccount(account: AccountSecurity) {
    Section(account.jid) {
        Text("This device's fingerprint", style = MaterialTheme.typography.labelLarge)
        SelectionContainer {
            Text(
                account.fingerprint?.let(::formatFingerprint) ?: "Not made yet: log in once first.",
                fontFamily = FontFamily.Monospace,
                style = MaterialTheme.typography.bodySmall,
            )
        }
        if (account.verificationUri != null) {
            Text("Verification link", style = MaterialTheme.typography.labelLarge)
            SelectionContainer {
                Text(account.verificationUri, style = MaterialTheme.typography.bodySmall)
            }
            Text(
                "A contact who opens this link verifies your devices.",
                style = MaterialTheme.typography.bodySmall,
            )
        }
    }
}

@Composable
private fun DeviceRow(device: Device) {
    val tags = listOfNotNull(
        encryptionText(device.encryption),
        trustText(device.trust),
        "inactive".takeIf { !device.active },
        "stale".takeIf { device.stale },
    )
    Column(verticalArrangement = Arrangement.spacedBy(2.dp)) {
        Text(
            (device.label ?: "Device ${device.deviceId}") + if (device.current) " (this device)" else "",
            style = MaterialTheme.typography.bodyLarge,
        )
        Text(
            tags.joinToString(" · "),
            style = MaterialTheme.typography.labelMedium,
            color = if (device.trust == DeviceTrust.VERIFIED) MaterialTheme.colorScheme.primary else MaterialTheme.colorScheme.onSurfaceVariant,
        )
        SelectionContainer {
            Text(
                device.fingerprint?.let(::formatFingerprint) ?: "No key published",
                fontFamily = FontFamily.Monospace,
                style = MaterialTheme.typography.bodySmall,
            )
        }
    }
}

@Composable
private fun Section(title: String, content: @Composable ColumnScope.() -> Unit) {
    Card(Modifier.fillMaxWidth().padding(horizontal = 16.dp)) {
        Column(verticalArrangement = Arrangement.spacedBy(8.dp), modifier = Modifier.padding(16.dp)) {
            Text(title, style = MaterialTheme.typography.titleMedium)
            content()
        }
    }
}
