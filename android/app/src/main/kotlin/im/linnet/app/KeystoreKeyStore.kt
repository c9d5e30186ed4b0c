package im.linnet.app

import android.content.Context
import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import android.util.Base64
import im.linnet.bindings.DatabaseKeyStore
import java.security.KeyStore
import javax.crypto.Cipher
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec

/**
 * Keeps the database key (64 hex digits) in SharedPreferences, encrypted with AES-GCM under
 * a key that never leaves the Android Keystore: base64 of the 12-byte IV, then the
 * ciphertext with its tag.
 */
class KeystoreKeyStore(context: Context) : DatabaseKeyStore {
    private val prefs = context.getSharedPreferences("linnet-keys", Context.MODE_PRIVATE)

    override fun load(): String? {
        val sealed = prefs.getString(PREF_KEY, null) ?: return null
        val bytes = Base64.decode(sealed, Base64.NO_WRAP)
        // Without the wrapping key the saved key is lost for good: fail rather than make a
        // new one, which would leave the database unreadable and look like a fresh start.
        val wrapping = existingKey() ?: error("the Keystore no longer has the database key's wrapping key")
        val cipher = Cipher.getInstance(TRANSFORMATION)
        cipher.init(Cipher.DECRYPT_MODE, wrapping, GCMParameterSpec(TAG_BITS, bytes, 0, IV_BYTES))
        return String(cipher.doFinal(bytes, IV_BYTES, bytes.size - IV_BYTES), Charsets.US_ASCII)
    }

    override fun save(keyHex: String) {
        val cipher = Cipher.getInstance(TRANSFORMATION)
        // The Keystore chooses the IV: it refuses caller-provided ones for encryption.
        cipher.init(Cipher.ENCRYPT_MODE, existingKey() ?: newKey())
        val sealed = cipher.iv + cipher.doFinal(keyHex.toByteArray(Charsets.US_ASCII))
        // commit(), not apply(): the core creates the database with this key right after, and
        // a key lost to a crash before an asynchronous write would lose the database too.
        check(prefs.edit().putString(PREF_KEY, Base64.encodeToString(sealed, Base64.NO_WRAP)).commit()) {
            "cannot save the database key"
        }
    }

    private fun existingKey(): SecretKey? =
        KeyStore.getInstance(KEYSTORE).apply { load(null) }.getKey(ALIAS, null) as SecretKey?

    private fun newKey(): SecretKey =
        KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, KEYSTORE).run {
            init(
                KeyGenParameterSpec.Builder(ALIAS, KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT)
                    .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
                    .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
                    .setKeySize(256)
                    .build(),
            )
            generateKey()
        }

    private companion object {
        const val KEYSTORE = "AndroidKeyStore"
        const val ALIAS = "linnet-database-key"
        const val PREF_KEY = "database-key"
        const val TRANSFORMATION = "AES/GCM/NoPadding"
        const val IV_BYTES = 12
        const val TAG_BITS = 128
    }
}
