//! Minimal argument parsing: `--name value`, `--flag`, and positionals. Kept by hand to
//! keep the CLI's build small.

use std::collections::HashMap;

const FLAGS: &[&str] = &["direct-tls", "only-ca", "help", "none", "relay"];

pub struct Args {
    pub command: String,
    pub positional: Vec<String>,
    opts: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    pub fn parse(it: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut command = String::new();
        let mut positional = Vec::new();
        let mut opts = HashMap::new();
        let mut flags = Vec::new();
        let mut it = it.peekable();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if FLAGS.contains(&name) {
                    flags.push(name.to_owned());
                } else {
                    let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                    opts.insert(name.to_owned(), v);
                }
            } else if a == "-h" {
                flags.push("help".into());
            } else if command.is_empty() {
                command = a;
            } else {
                positional.push(a);
            }
        }
        Ok(Args {
            command,
            positional,
            opts,
            flags,
        })
    }

    pub fn opt(&self, name: &str) -> Option<&str> {
        self.opts.get(name).map(String::as_str)
    }

    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options_flags_and_positionals() {
        let a = Args::parse(
            [
                "--data-dir",
                "d",
                "send",
                "bob@x",
                "hi there",
                "--direct-tls",
                "--wait",
                "delivered",
            ]
            .into_iter()
            .map(String::from),
        )
        .unwrap();
        assert_eq!(a.command, "send");
        assert_eq!(a.positional, vec!["bob@x", "hi there"]);
        assert_eq!(a.opt("data-dir"), Some("d"));
        assert_eq!(a.opt("wait"), Some("delivered"));
        assert!(a.flag("direct-tls"));
        assert!(Args::parse(["--key-file"].into_iter().map(String::from)).is_err());
    }
}
