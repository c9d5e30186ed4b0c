package im.linnet.app.ui

import androidx.compose.runtime.Composable
import androidx.compose.ui.geometry.Size
import androidx.compose.ui.graphics.ImageBitmap
import androidx.compose.ui.graphics.asSkiaBitmap
import androidx.compose.ui.graphics.toPixelMap
import androidx.compose.ui.test.ExperimentalTestApi
import androidx.compose.ui.test.SemanticsMatcher
import androidx.compose.ui.test.SkikoComposeUiTest
import androidx.compose.ui.test.hasContentDescription
import androidx.compose.ui.test.hasText
import androidx.compose.ui.test.runSkikoComposeUiTest
import androidx.compose.ui.unit.Density
import java.io.File
import kotlin.test.Test
import kotlin.test.assertTrue
import kotlin.test.fail
import org.jetbrains.skia.EncodedImageFormat
import org.jetbrains.skia.Image

/**
 * Each screen rendered from a fixed snapshot, headless, at a phone's size, to
 * docs/screenshots/<screen>.png. Each test also checks the picture is a picture (many
 * colours, not one flat fill) and that what the snapshot says is on the screen, through
 * Compose's semantics tree: the texts a reader sees and the icons' descriptions.
 */
@OptIn(ExperimentalTestApi::class)
class ScreenshotTest {
    @Test
    fun onboarding() = shoot(
        "onboarding",
        texts = listOf("Welcome to Linnet", "New account", "I have an account", "No phone number", "Your address will be alice@linnet.im", "Create account"),
    ) {
        OnboardingContent(Snapshots.onboarding, onChange = {}, onSubmit = {}, onDismissError = {})
    }

    @Test
    fun chatList() = shoot(
        "chat-list",
        texts = listOf(
            "Chats",
            "${Snapshots.ME}: Connecting…",
            "grandma@jabber.de would like to add you as a contact",
            "Approve",
            "Family",
            "Dad: Dinner at seven on Sunday?",
            "3",
            "You: On my way",
            "holiday-2024.jpg",
            "4:18 PM",
            "12",
            "Dec 1, 2024",
        ),
        descriptions = listOf("Add a contact", "Settings", "File"),
    ) {
        ChatListContent(
            Snapshots.chatList,
            nowMs = Snapshots.NOW,
            error = null,
            onOpen = {},
            onApprove = { _, _ -> },
            onDeny = { _, _ -> },
            onAddContact = {},
            onAddAccount = {},
            onSettings = {},
            onDismissError = {},
        )
    }

    @Test
    fun conversation() = shoot(
        "conversation",
        texts = listOf("Bob Martin", "typing…", "Yes! Meet at the station at 9:30", "harz-route.gpx", "edited", "Bob's server did not answer", "On my way", "Message"),
        descriptions = listOf("Encrypted", "Read", "Delivered", "Sent", "Not sent", "Sending", "File", "Encryption keys"),
    ) {
        Conversation()
    }

    @Test
    fun conversationDark() = shoot(
        "conversation-dark",
        texts = listOf("Bob Martin", "Perfect. Should I bring the map?", "❤ 2"),
        dark = true,
    ) {
        Conversation()
    }

    @Composable
    private fun Conversation() = ConversationContent(
        Snapshots.conversation,
        draft = "",
        nowMs = Snapshots.NOW,
        error = null,
        onDraftChange = {},
        onSend = {},
        onLoadOlder = {},
        onBack = {},
        onDevices = {},
        onDismissError = {},
    )

    @Test
    fun addContact() = shoot(
        "add-contact",
        texts = listOf("Add a contact", "Add to", "alice@work.example", "grandma@jabber.de", "Grandma", "They will be asked"),
    ) {
        AddContactContent(Snapshots.addContact, onChange = {}, onAdd = {}, onBack = {}, onDismissError = {})
    }

    @Test
    fun settings() = shoot(
        "settings",
        texts = listOf(
            "Settings",
            "This device's fingerprint",
            "3b9f0c2a d4e1775b 60c8e2f1 a94d0b7e",
            "Verification link",
            "A contact's devices",
            "Pixel 8",
            "OMEMO 2 · Verified",
        ),
    ) {
        SettingsContent(Snapshots.settings, onChange = {}, onLookUp = {}, onVerify = {}, onBack = {}, onDismissError = {})
    }

    private fun shoot(
        name: String,
        texts: List<String>,
        descriptions: List<String> = emptyList(),
        dark: Boolean = false,
        content: @Composable () -> Unit,
    ) = runSkikoComposeUiTest(
        size = Size(WIDTH_DP * DENSITY, HEIGHT_DP * DENSITY),
        density = Density(DENSITY),
    ) {
        setContent { LinnetTheme(dark = dark, content = content) }
        waitForIdle()
        val missing = texts.filterNot { exists(hasText(it, substring = true)) } +
            descriptions.filterNot { exists(hasContentDescription(it)) }.map { "icon \"$it\"" }
        val image = captureToImage()
        val file = save(image, name)
        if (missing.isNotEmpty()) fail("$name: not on the screen: $missing (see $file)")
        assertIsAPicture(image, name)
    }

    private fun SkikoComposeUiTest.exists(matcher: SemanticsMatcher): Boolean =
        onAllNodes(matcher, useUnmergedTree = true).fetchSemanticsNodes().isNotEmpty()

    private fun save(image: ImageBitmap, name: String): File {
        val dir = File(System.getProperty("linnet.screenshots") ?: "build/screenshots")
        dir.mkdirs()
        val png = Image.makeFromBitmap(image.asSkiaBitmap()).encodeToData(EncodedImageFormat.PNG)
            ?: fail("$name: PNG encoding failed")
        return File(dir, "$name.png").apply { writeBytes(png.bytes) }
    }

    /** Many colours (text is anti-aliased) and no single colour covering nearly all. */
    private fun assertIsAPicture(image: ImageBitmap, name: String) {
        val pixels = image.toPixelMap()
        val counts = HashMap<Int, Int>()
        for (y in 0 until pixels.height) {
            for (x in 0 until pixels.width) {
                counts.merge(pixels.buffer[pixels.bufferOffset + y * pixels.stride + x], 1, Int::plus)
            }
        }
        val total = pixels.width * pixels.height
        val dominant = counts.values.max()
        assertTrue(counts.size >= 64, "$name: only ${counts.size} colours")
        assertTrue(dominant < total * 0.95, "$name: one colour covers ${dominant * 100 / total}%")
    }

    private companion object {
        /** A common phone's window in dp (Pixel 7a-like), drawn at 2 px per dp. */
        const val WIDTH_DP = 411
        const val HEIGHT_DP = 891
        const val DENSITY = 2f
    }
}
