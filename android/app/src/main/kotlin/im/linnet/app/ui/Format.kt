package im.linnet.app.ui

import androidx.compose.ui.graphics.Color
import androidx.compose.ui.text.AnnotatedString
import androidx.compose.ui.text.SpanStyle
import androidx.compose.ui.text.buildAnnotatedString
import androidx.compose.ui.text.font.FontFamily
import androidx.compose.ui.text.font.FontStyle
import androidx.compose.ui.text.font.FontWeight
import androidx.compose.ui.text.style.TextDecoration
import im.linnet.bindings.Connection
import im.linnet.bindings.ConnectionConnecting
import im.linnet.bindings.ConnectionOffline
import im.linnet.bindings.ConnectionOnline
import im.linnet.bindings.ConnectionWaiting
import im.linnet.bindings.DeviceTrust
import im.linnet.bindings.Direction
import im.linnet.bindings.Encryption
import im.linnet.bindings.FileInfo
import im.linnet.bindings.Preview
import im.linnet.bindings.StyleSpan
import im.linnet.bindings.TextStyle as Markup
import im.linnet.bindings.TransferState
import java.time.Instant
import java.time.ZoneId
import java.time.format.DateTimeFormatter
import java.time.format.FormatStyle

/** An account's connection in a few words; [nowMs] counts down to the next retry. */
fun connectionText(connection: Connection, nowMs: Long): String = when (connection) {
    is ConnectionOnline -> "Online"
    is ConnectionConnecting -> "Connecting…"
    is ConnectionWaiting -> {
        val seconds = (connection.retryAtMs - nowMs + 999) / 1000
        val retry = when {
            seconds <= 0 -> "retrying now"
            seconds < 60 -> "retrying in $seconds s"
            else -> "retrying in ${(seconds + 59) / 60} min"
        }
        "Waiting (${connection.reason}), $retry"
    }
    is ConnectionOffline -> connection.reason?.let { "Offline: $it" } ?: "Offline"
}

private val timeOfDay = DateTimeFormatter.ofLocalizedTime(FormatStyle.SHORT)
private val dayOfYear = DateTimeFormatter.ofPattern("d MMM")
private val fullDate = DateTimeFormatter.ofLocalizedDate(FormatStyle.MEDIUM)

/** The time of day for today, the day for this year, the date before. */
fun formatTime(timestampMs: Long, nowMs: Long, zone: ZoneId = ZoneId.systemDefault()): String {
    val at = Instant.ofEpochMilli(timestampMs).atZone(zone)
    val now = Instant.ofEpochMilli(nowMs).atZone(zone)
    val format = when {
        at.toLocalDate() == now.toLocalDate() -> timeOfDay
        at.year == now.year -> dayOfYear
        else -> fullDate
    }
    return format.format(at)
}

/** A chat's last message in one line (for a file, its name: the list shows an icon). */
fun previewText(preview: Preview): String {
    val text = preview.file ?: preview.body
    return if (preview.direction == Direction.OUTGOING) "You: $text" else text
}

/** 64 hex digits as two lines of four groups of eight, the way people compare them. */
fun formatFingerprint(hex: String): String =
    hex.chunked(8).chunked(4).joinToString("\n") { it.joinToString(" ") }

fun trustText(trust: DeviceTrust?): String = when (trust) {
    DeviceTrust.VERIFIED -> "Verified"
    DeviceTrust.BLIND -> "Trusted, not verified"
    DeviceTrust.UNDECIDED -> "Not trusted yet"
    DeviceTrust.DISTRUSTED -> "Distrusted"
    null -> "Trust unknown"
}

fun encryptionText(encryption: Encryption): String = when (encryption) {
    Encryption.PLAIN -> "Not encrypted"
    Encryption.OMEMO03 -> "OMEMO 0.3"
    Encryption.OMEMO2 -> "OMEMO 2"
}

/** Where an attachment's transfer stands, or null once there is nothing to say. */
fun transferText(file: FileInfo): String? {
    val percent = file.size?.takeIf { it > 0u }?.let { " ${file.transferred * 100u / it}%" } ?: ""
    return when (file.state) {
        TransferState.UPLOADING -> "Uploading$percent"
        TransferState.WAITING -> "Waiting to upload"
        TransferState.DOWNLOADING -> "Downloading$percent"
        TransferState.FAILED -> file.error?.let { "Transfer failed: $it" } ?: "Transfer failed"
        TransferState.CANCELLED -> "Cancelled"
        TransferState.UPLOADED, TransferState.AVAILABLE, TransferState.DOWNLOADED -> null
    }
}

/** The body with the core's styling spans (UTF-16 offsets, as Kotlin strings count). */
fun styledBody(body: String, spans: List<StyleSpan>, quoteColor: Color): AnnotatedString =
    buildAnnotatedString {
        append(body)
        for (span in spans) {
            val start = span.start.toInt().coerceIn(0, body.length)
            val end = span.end.toInt().coerceIn(start, body.length)
            addStyle(spanStyle(span.style, quoteColor), start, end)
        }
    }

private fun spanStyle(style: Markup, quoteColor: Color): SpanStyle = when (style) {
    Markup.STRONG -> SpanStyle(fontWeight = FontWeight.Bold)
    Markup.EMPHASIS -> SpanStyle(fontStyle = FontStyle.Italic)
    Markup.STRIKE -> SpanStyle(textDecoration = TextDecoration.LineThrough)
    Markup.CODE, Markup.CODE_BLOCK -> SpanStyle(fontFamily = FontFamily.Monospace)
    Markup.QUOTE -> SpanStyle(color = quoteColor)
}
