//! A small element builder: minidom's builder wants validated attribute names; ours are
//! all static literals, so the check cannot fail at run time for our own code paths.

use xmpp_parsers::minidom::{Element, ElementBuilder, Node};
use xso::exports::rxml::NcName;

pub(crate) struct El(ElementBuilder);

pub(crate) fn el(name: &str, ns: &str) -> El {
    El(Element::builder(name, ns))
}

fn ncname(name: &'static str) -> NcName {
    NcName::try_from(name).unwrap_or_else(|_| NcName::try_from("invalid").expect("literal"))
}

impl El {
    pub fn attr(self, name: &'static str, value: impl AsRef<str>) -> Self {
        El(self.0.attr(ncname(name), value.as_ref().to_owned()))
    }
    pub fn attr_opt(self, name: &'static str, value: Option<impl AsRef<str>>) -> Self {
        match value {
            Some(v) => self.attr(name, v),
            None => self,
        }
    }
    pub fn text(self, text: impl Into<String>) -> Self {
        El(self.0.append(Node::Text(text.into())))
    }
    pub fn child(self, child: impl Into<Element>) -> Self {
        El(self.0.append(Node::Element(child.into())))
    }
    pub fn build(self) -> Element {
        self.0.build()
    }
}

impl From<El> for Element {
    fn from(e: El) -> Element {
        e.build()
    }
}

pub(crate) trait ElExt {
    fn child_text(&self, name: &str, ns: &str) -> Option<String>;
}

impl ElExt for Element {
    fn child_text(&self, name: &str, ns: &str) -> Option<String> {
        self.get_child(name, ns).map(|c| c.text())
    }
}
