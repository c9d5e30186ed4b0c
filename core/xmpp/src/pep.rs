//! Personal eventing (XEP-0163 on XEP-0060): publishing items to our own nodes with the
//! node configuration they need, and reading anyone's items. OMEMO keeps its device lists
//! and bundles here, and needs them readable by people who are not our contacts, so a
//! publish says how its node must be configured (publish-options). Servers that do not
//! take publish-options, or whose existing node is configured otherwise, get the node
//! configured first, as XEP-0060 §7.1.5 and XEP-0384 §5.3 suggest.

use xmpp_parsers::minidom::Element;

use crate::elem::el;
use crate::error::RequestError;
use crate::jid::BareJid;
use crate::session::Session;

const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const NS_DATA: &str = "jabber:x:data";
const FORM_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
const FORM_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";

/// Times a publish the server refused transiently is sent again.
const PUBLISH_RETRIES: u64 = 5;

/// Items returned by one query at most: a node is ours to read, not to flood us with.
pub const MAX_ITEMS: usize = 1000;

/// How the node a publish goes to must be configured (XEP-0060 node configuration fields).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// `pubsub#access_model`, e.g. "open" (anyone may read) or "presence".
    pub access_model: Option<String>,
    /// `pubsub#max_items`: a number or "max".
    pub max_items: Option<String>,
    /// `pubsub#persist_items`: "true" or "false".
    pub persist_items: Option<String>,
    /// `pubsub#send_last_published_item`: "never", "on_sub" or "on_sub_and_presence".
    pub send_last_published_item: Option<String>,
}

impl NodeConfig {
    fn fields(&self) -> Vec<(&'static str, &str)> {
        let mut f = Vec::new();
        if let Some(a) = &self.access_model {
            f.push(("pubsub#access_model", a.as_str()));
        }
        if let Some(m) = &self.max_items {
            f.push(("pubsub#max_items", m.as_str()));
        }
        if let Some(p) = &self.persist_items {
            f.push(("pubsub#persist_items", p.as_str()));
        }
        if let Some(s) = &self.send_last_published_item {
            f.push(("pubsub#send_last_published_item", s.as_str()));
        }
        f
    }
}

/// How a publish got through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Published {
    /// With its publish-options as asked.
    AsAsked,
    /// After configuring the node: it existed with another configuration, or the server
    /// does not take publish-options.
    NodeConfigured,
}

/// One item of a node: its id and its payload as XML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PepItem {
    pub id: Option<String>,
    pub payload: String,
}

fn form(form_type: &str, fields: &[(&'static str, &str)]) -> Element {
    let mut x = el("x", NS_DATA).attr("type", "submit").child(
        el("field", NS_DATA)
            .attr("var", "FORM_TYPE")
            .attr("type", "hidden")
            .child(el("value", NS_DATA).text(form_type)),
    );
    for (var, value) in fields {
        x = x.child(
            el("field", NS_DATA)
                .attr("var", var)
                .child(el("value", NS_DATA).text(*value)),
        );
    }
    x.build()
}

fn publish_iq(
    node: &str,
    item_id: Option<&str>,
    payload: &Element,
    options: &[(&'static str, &str)],
) -> Element {
    let item = el("item", NS_PUBSUB)
        .attr_opt("id", item_id)
        .child(payload.clone());
    let mut pubsub =
        el("pubsub", NS_PUBSUB).child(el("publish", NS_PUBSUB).attr("node", node).child(item));
    if !options.is_empty() {
        pubsub = pubsub
            .child(el("publish-options", NS_PUBSUB).child(form(FORM_PUBLISH_OPTIONS, options)));
    }
    pubsub.build()
}

fn parse_payload(xml: &str) -> Result<Element, RequestError> {
    let payload: Element = xml
        .parse()
        .map_err(|_| RequestError::BadArgument("payload is not well-formed XML".into()))?;
    Ok(payload)
}

fn check_node(node: &str) -> Result<(), RequestError> {
    if node.is_empty() || node.len() > 1024 {
        return Err(RequestError::BadArgument(
            "node name empty or too long".into(),
        ));
    }
    Ok(())
}

impl Session {
    /// Publishes `payload_xml` as item `item_id` of our node `node`, which must be
    /// configured as `config` says (created so if it does not exist). An existing node
    /// configured otherwise is reconfigured (we own it); a server without publish-options
    /// gets the node configured and the item published plainly.
    pub async fn pep_publish(
        &self,
        node: &str,
        item_id: Option<&str>,
        payload_xml: &str,
        config: &NodeConfig,
    ) -> Result<Published, RequestError> {
        check_node(node)?;
        let payload = parse_payload(payload_xml)?;
        let fields = config.fields();
        if fields.is_empty() {
            self.publish(publish_iq(node, item_id, &payload, &[]))
                .await?;
            return Ok(Published::AsAsked);
        }
        match self
            .publish(publish_iq(node, item_id, &payload, &fields))
            .await
        {
            Ok(_) => return Ok(Published::AsAsked),
            // conflict + precondition-not-met: the node exists, configured otherwise.
            // Servers without publish-options answer with another condition; both are
            // handled the same way: configure the node, then publish plainly.
            Err(RequestError::Stanza { condition, .. })
                if matches!(
                    condition.as_str(),
                    "conflict" | "feature-not-implemented" | "bad-request" | "not-acceptable"
                ) =>
            {
                tracing::debug!(condition = %condition, "publish-options refused; configuring the node");
            }
            Err(e) => return Err(e),
        }
        // A node that does not exist yet cannot be configured: publishing creates it (with
        // the server's defaults), and the configuration follows.
        let configured = self.pep_configure(node, config).await;
        if matches!(&configured, Err(RequestError::Stanza { condition, .. }) if condition == "item-not-found")
        {
            self.publish(publish_iq(node, item_id, &payload, &[]))
                .await?;
            self.pep_configure(node, config).await?;
            return Ok(Published::NodeConfigured);
        }
        configured?;
        self.publish(publish_iq(node, item_id, &payload, &[]))
            .await?;
        Ok(Published::NodeConfigured)
    }

    /// Sends one publish. ejabberd creates a missing PEP node inside the publish, and when
    /// that creation loses a database lock to another account's (its node index is one
    /// shared counter) it answers item-not-found, or internal-server-error, for a publish
    /// that would go through a moment later. Those two are tried again, a few times.
    async fn publish(&self, pubsub: Element) -> Result<Element, RequestError> {
        let mut attempt = 0u64;
        loop {
            match self.iq("set", None, pubsub.clone()).await {
                Err(RequestError::Stanza { condition, .. })
                    if attempt < PUBLISH_RETRIES
                        && matches!(
                            condition.as_str(),
                            "item-not-found" | "internal-server-error"
                        ) =>
                {
                    attempt += 1;
                    tracing::debug!(condition = %condition, attempt, "publish refused; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Sets configuration fields of our node `node` (XEP-0060 §8.2).
    pub async fn pep_configure(&self, node: &str, config: &NodeConfig) -> Result<(), RequestError> {
        check_node(node)?;
        let configure = el("configure", NS_PUBSUB_OWNER)
            .attr("node", node)
            .child(form(FORM_NODE_CONFIG, &config.fields()));
        self.iq(
            "set",
            None,
            el("pubsub", NS_PUBSUB_OWNER).child(configure).build(),
        )
        .await
        .map(|_| ())
    }

    /// The configuration of our node `node` (XEP-0060 §8.2): its form's fields, each with
    /// its first value, FORM_TYPE left out.
    pub async fn pep_node_config(&self, node: &str) -> Result<Vec<(String, String)>, RequestError> {
        check_node(node)?;
        let reply = self
            .iq(
                "get",
                None,
                el("pubsub", NS_PUBSUB_OWNER)
                    .child(el("configure", NS_PUBSUB_OWNER).attr("node", node))
                    .build(),
            )
            .await?;
        let x = reply
            .get_child("pubsub", NS_PUBSUB_OWNER)
            .and_then(|p| p.get_child("configure", NS_PUBSUB_OWNER))
            .and_then(|c| c.get_child("x", NS_DATA))
            .ok_or_else(|| RequestError::Unexpected("configuration without a form".into()))?;
        Ok(x.children()
            .filter(|f| f.is("field", NS_DATA))
            .filter_map(|f| {
                let var = f.attr("var")?;
                let value = f.get_child("value", NS_DATA).map(Element::text);
                (var != "FORM_TYPE").then(|| (var.to_owned(), value.unwrap_or_default()))
            })
            .collect())
    }

    /// The items of `node` at `jid` (ours when `None`), or only item `item_id`. An item
    /// without a payload element is left out; more than [`MAX_ITEMS`] is an error.
    pub async fn pep_items(
        &self,
        jid: Option<&BareJid>,
        node: &str,
        item_id: Option<&str>,
    ) -> Result<Vec<PepItem>, RequestError> {
        check_node(node)?;
        let mut items = el("items", NS_PUBSUB).attr("node", node);
        if let Some(id) = item_id {
            items = items.child(el("item", NS_PUBSUB).attr("id", id));
        }
        let reply = self
            .iq(
                "get",
                jid.map(|j| j.as_str()),
                el("pubsub", NS_PUBSUB).child(items).build(),
            )
            .await?;
        let items = reply
            .get_child("pubsub", NS_PUBSUB)
            .and_then(|p| p.get_child("items", NS_PUBSUB))
            .ok_or_else(|| RequestError::Unexpected("pubsub result without items".into()))?;
        if items.attr("node") != Some(node) {
            return Err(RequestError::Unexpected("items of another node".into()));
        }
        let mut out = Vec::new();
        for item in items.children().filter(|c| c.is("item", NS_PUBSUB)) {
            if out.len() == MAX_ITEMS {
                return Err(RequestError::Unexpected("too many items".into()));
            }
            let id = item.attr("id").map(str::to_owned);
            if item_id.is_some() && id.as_deref() != item_id {
                continue;
            }
            if let Some(payload) = item.children().next() {
                out.push(PepItem {
                    id,
                    payload: String::from(payload),
                });
            }
        }
        Ok(out)
    }
}
