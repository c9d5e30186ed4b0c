package im.linnet.app.ui

import im.linnet.bindings.AuthException
import im.linnet.bindings.BadInputException
import im.linnet.bindings.InternalException
import im.linnet.bindings.LinnetException
import im.linnet.bindings.NetworkException
import im.linnet.bindings.NotFoundException
import im.linnet.bindings.PolicyException
import im.linnet.bindings.TlsException
import im.linnet.bindings.WrongKeyException

/**
 * What to tell the user about a failure. Only refusals and bad input carry the core's
 * detail: there it says what to change (name taken, password too short); elsewhere it is
 * for logs, not people.
 */
fun LinnetException.humanMessage(): String = when (this) {
    is NetworkException -> "Could not reach the server. Check the address and your connection, then try again."
    is AuthException -> "The address or the password is wrong."
    is TlsException -> "The server could not prove who it is, so Linnet did not connect."
    is NotFoundException -> "That account or conversation no longer exists."
    is PolicyException -> "The server refused: $detail"
    is BadInputException -> "Please check what you entered: $detail"
    is WrongKeyException -> "Linnet's data on this device cannot be unlocked with this device's key."
    is InternalException -> "Something went wrong inside Linnet. Please try again."
}
