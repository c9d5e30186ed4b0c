package im.linnet.app

import android.net.Uri
import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.activity.enableEdgeToEdge
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import androidx.navigation.NavType
import androidx.navigation.compose.NavHost
import androidx.navigation.compose.composable
import androidx.navigation.compose.rememberNavController
import androidx.navigation.navArgument
import im.linnet.app.ui.LinnetTheme
import im.linnet.app.ui.StartupContent
import im.linnet.app.ui.humanMessage
import im.linnet.bindings.Linnet

class MainActivity : ComponentActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        enableEdgeToEdge()
        val app = application as LinnetApp
        setContent {
            LinnetTheme {
                val client by app.client.collectAsStateWithLifecycle()
                when (val state = client) {
                    ClientState.Opening -> StartupContent(error = null)
                    is ClientState.Failed -> StartupContent(error = state.error.humanMessage())
                    is ClientState.Ready -> LinnetNavHost(state.linnet, state.hasAccounts)
                }
            }
        }
    }
}

private const val ONBOARDING = "onboarding"
private const val CHATS = "chats"
private const val CONVERSATION = "conversation/{id}"
private const val ADD_CONTACT = "add-contact"
private const val SETTINGS = "settings?account={account}&peer={peer}"

@Composable
private fun LinnetNavHost(linnet: Linnet, hasAccounts: Boolean) {
    val nav = rememberNavController()
    NavHost(nav, startDestination = if (hasAccounts) CHATS else ONBOARDING) {
        composable(ONBOARDING) {
            OnboardingRoute(linnet, onDone = {
                nav.navigate(CHATS) { popUpTo(nav.graph.id) { inclusive = true } }
            })
        }
        composable(CHATS) {
            ChatListRoute(
                linnet,
                onOpen = { nav.navigate("conversation/$it") },
                onAddContact = { nav.navigate(ADD_CONTACT) },
                onAddAccount = { nav.navigate(ONBOARDING) },
                onSettings = { nav.navigate("settings") },
            )
        }
        composable(CONVERSATION, arguments = listOf(navArgument("id") { type = NavType.LongType })) { entry ->
            ConversationRoute(
                linnet,
                id = requireNotNull(entry.arguments).getLong("id"),
                onBack = { nav.popBackStack() },
                onDevices = { account, peer -> nav.navigate("settings?account=$account&peer=${Uri.encode(peer)}") },
            )
        }
        composable(ADD_CONTACT) {
            AddContactRoute(
                linnet,
                // The new conversation replaces this screen: back goes to the chat list.
                onAdded = { id -> nav.navigate("conversation/$id") { popUpTo(CHATS) } },
                onBack = { nav.popBackStack() },
            )
        }
        composable(
            SETTINGS,
            arguments = listOf(
                navArgument("account") {
                    type = NavType.LongType
                    defaultValue = -1L
                },
                navArgument("peer") {
                    type = NavType.StringType
                    nullable = true
                    defaultValue = null
                },
            ),
        ) { entry ->
            val args = requireNotNull(entry.arguments)
            SettingsRoute(
                linnet,
                account = args.getLong("account").takeIf { it >= 0 },
                peer = args.getString("peer"),
                onBack = { nav.popBackStack() },
            )
        }
    }
}
