package im.linnet.app.ui

import androidx.compose.foundation.isSystemInDarkTheme
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.darkColorScheme
import androidx.compose.material3.lightColorScheme
import androidx.compose.runtime.Composable
import androidx.compose.ui.graphics.Color

private val Light = lightColorScheme(
    primary = Color(0xFF2F6B52),
    onPrimary = Color.White,
    primaryContainer = Color(0xFFB2F1D2),
    onPrimaryContainer = Color(0xFF002115),
)

private val Dark = darkColorScheme(
    primary = Color(0xFF96D5B6),
    onPrimary = Color(0xFF003826),
    primaryContainer = Color(0xFF12513B),
    onPrimaryContainer = Color(0xFFB2F1D2),
)

/** Material 3 with Linnet's colours; no platform calls, so it renders off Android too. */
@Composable
fun LinnetTheme(dark: Boolean = isSystemInDarkTheme(), content: @Composable () -> Unit) {
    MaterialTheme(colorScheme = if (dark) Dark else Light, content = content)
}
