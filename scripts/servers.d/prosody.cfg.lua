-- Linnet's loopback Prosody for tests and the demo. Rendered by scripts/servers into the
-- run dir: the @-delimited placeholders are substituted. Open registration, throwaway CA:
-- never use this on a reachable machine.

pidfile = "@RUN@/prosody/prosody.pid"
data_path = "@RUN@/prosody/data"
admin_socket = "@RUN@/prosody/admin.sock"
plugin_paths = { "@PROSODY_MODULES@" }
log = {
	info = "@RUN@/prosody/prosody.log";
	error = "@RUN@/prosody/prosody.err";
}

-- Loopback only; no s2s.
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { @PROSODY_PORT@ }
c2s_direct_tls_ports = { @PROSODY_TLS_PORT@ } -- XEP-0368
s2s_ports = { }
http_ports = { @PROSODY_HTTP_PORT@ }
http_interfaces = { "127.0.0.1" }
https_ports = { @PROSODY_HTTPS_PORT@ }
https_interfaces = { "127.0.0.1" }
-- Nagle doubles loopback login time (FIELD-NOTES).
network_settings = { nagle = false }

-- One certificate (SANs: domain, *.domain, 127.0.0.1) for every service and host.
certificates = "@RUN@/prosody/certs"
ssl = {
	certificate = "@RUN@/prosody/certs/@PROSODY_DOMAIN@.crt";
	key = "@RUN@/prosody/certs/@PROSODY_DOMAIN@.key";
}
c2s_require_encryption = true
allow_unencrypted_plain_auth = false
authentication = "internal_hashed"
-- Stored SCRAM keys are per hash, so Prosody offers one SCRAM family: SHA-256 (+PLUS).
-- ejabberd (plain storage) offers SHA-1/256/512. "internal_plain" here would offer both.
password_hash = "SHA-256"
storage = "internal"

-- Open in-band registration. mod_register_limits throttles only when
-- min_seconds_between_registrations or registration_throttle_max is set (neither is),
-- and 127.0.0.1 is on its allowlist anyway: tests may register dozens of accounts fast.
allow_registration = true

-- Uploads are announced with 127.0.0.1 URLs (the certificate has an IP SAN), so clients
-- need no resolver for *.localhost; requests with that Host go to the upload component.
http_default_host = "upload.@PROSODY_DOMAIN@"

archive_expires_after = "1w"
default_archive_policy = true

-- XEP-0215: STUN/TURN from coturn with the shared secret (REST API credentials).
turn_external_host = "127.0.0.1"
turn_external_port = @TURN_PORT@
turn_external_secret = "@TURN_SECRET@"
turn_external_tcp = true

modules_enabled = {
	-- core
	"roster"; "saslauth"; "tls"; "disco"; "carbons"; "pep"; "private"; "blocklist";
	"vcard4"; "vcard_legacy"; "bookmarks"; "version"; "uptime"; "time"; "ping";
	"register"; "mam"; "smacks"; "csi_simple"; "external_services"; "turn_external";
	"cloud_notify"; "admin_shell";
	-- community (prosody-modules): SASL2, Bind2, FAST, inline SM
	"sasl2"; "sasl2_bind2"; "sasl2_fast"; "sasl2_sm";
}
modules_disabled = { "s2s" }

VirtualHost "@PROSODY_DOMAIN@"

Component "conference.@PROSODY_DOMAIN@" "muc"
	modules_enabled = { "muc_mam" }
	muc_room_default_persistent = false

Component "upload.@PROSODY_DOMAIN@" "http_file_share"
	http_external_url = "https://127.0.0.1:@PROSODY_HTTPS_PORT@/"
	http_file_share_size_limit = 100 * 1024 * 1024
