//! `cargo run -p linnet-ffi --bin uniffi-bindgen -- generate --library <cdylib> --language
//! kotlin|swift --out-dir <dir>`: uniffi's own generator, at the version the library uses.
fn main() {
    uniffi::uniffi_bindgen_main()
}
