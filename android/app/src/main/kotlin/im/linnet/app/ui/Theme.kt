package im.linnet.app.ui

import androidx.compose.foundation.isSystemInDarkTheme
import androidx.compose.material3.ColorScheme
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.darkColorScheme
import androidx.compose.material3.lightColorScheme
import androidx.compose.runtime.Composable
import androidx.compose.ui.graphics.Color

// Linnet's green (#2F6B52) as a whole Material 3 tonal palette, so that surfaces, cards,
// chips and avatars match it instead of falling back to the baseline purple.
val LinnetLightColors: ColorScheme = lightColorScheme(
    primary = Color(0xFF2F6B52),
    onPrimary = Color.White,
    primaryContainer = Color(0xFFB2F1D2),
    onPrimaryContainer = Color(0xFF002115),
    inversePrimary = Color(0xFF96D5B6),
    secondary = Color(0xFF4C6358),
    onSecondary = Color.White,
    secondaryContainer = Color(0xFFCEE9DA),
    onSecondaryContainer = Color(0xFF092016),
    tertiary = Color(0xFF3E6374),
    onTertiary = Color.White,
    tertiaryContainer = Color(0xFFC2E8FC),
    onTertiaryContainer = Color(0xFF001F2A),
    background = Color(0xFFF6FBF6),
    onBackground = Color(0xFF171D1A),
    surface = Color(0xFFF6FBF6),
    onSurface = Color(0xFF171D1A),
    surfaceVariant = Color(0xFFDBE5DD),
    onSurfaceVariant = Color(0xFF404943),
    surfaceTint = Color(0xFF2F6B52),
    inverseSurface = Color(0xFF2C322E),
    inverseOnSurface = Color(0xFFEDF2ED),
    outline = Color(0xFF707973),
    outlineVariant = Color(0xFFBFC9C1),
    surfaceBright = Color(0xFFF6FBF6),
    surfaceDim = Color(0xFFD6DBD7),
    surfaceContainerLowest = Color.White,
    surfaceContainerLow = Color(0xFFF0F5F0),
    surfaceContainer = Color(0xFFEAEFEA),
    surfaceContainerHigh = Color(0xFFE4EAE5),
    surfaceContainerHighest = Color(0xFFDFE4DF),
)

val LinnetDarkColors: ColorScheme = darkColorScheme(
    primary = Color(0xFF96D5B6),
    onPrimary = Color(0xFF003826),
    primaryContainer = Color(0xFF12513B),
    onPrimaryContainer = Color(0xFFB2F1D2),
    inversePrimary = Color(0xFF2F6B52),
    secondary = Color(0xFFB3CCBF),
    onSecondary = Color(0xFF1F352B),
    secondaryContainer = Color(0xFF354B41),
    onSecondaryContainer = Color(0xFFCEE9DA),
    tertiary = Color(0xFFA6CCE0),
    onTertiary = Color(0xFF083544),
    tertiaryContainer = Color(0xFF254B5B),
    onTertiaryContainer = Color(0xFFC2E8FC),
    background = Color(0xFF0F1512),
    onBackground = Color(0xFFDFE4DF),
    surface = Color(0xFF0F1512),
    onSurface = Color(0xFFDFE4DF),
    surfaceVariant = Color(0xFF404943),
    onSurfaceVariant = Color(0xFFBFC9C1),
    surfaceTint = Color(0xFF96D5B6),
    inverseSurface = Color(0xFFDFE4DF),
    inverseOnSurface = Color(0xFF2C322E),
    outline = Color(0xFF8A938C),
    outlineVariant = Color(0xFF404943),
    surfaceBright = Color(0xFF353B37),
    surfaceDim = Color(0xFF0F1512),
    surfaceContainerLowest = Color(0xFF0A0F0D),
    surfaceContainerLow = Color(0xFF171D1A),
    surfaceContainer = Color(0xFF1B211E),
    surfaceContainerHigh = Color(0xFF252B28),
    surfaceContainerHighest = Color(0xFF303633),
)

/**
 * Material 3 with Linnet's colours; no platform calls, so it renders off Android too
 * (docs/screenshots). [colors] lets a platform pass its own scheme (Android's dynamic
 * colour, for one) in place of Linnet's.
 */
@Composable
fun LinnetTheme(
    dark: Boolean = isSystemInDarkTheme(),
    colors: ColorScheme = if (dark) LinnetDarkColors else LinnetLightColors,
    content: @Composable () -> Unit,
) {
    MaterialTheme(colorScheme = colors, content = content)
}
