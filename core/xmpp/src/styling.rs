//! XEP-0393 Message Styling (v1.1.1): a pure parser from a message body to styled ranges.
//!
//! The parser never alters the text: it returns ranges that a renderer applies on top of
//! the body, directive characters included (the XEP recommends showing them, styled like
//! the text they apply to). A message carrying `<unstyled xmlns='urn:xmpp:styling:0'/>`
//! must not be styled at all; that is the caller's decision, this module only parses.
//!
//! Where the XEP leaves room for interpretation, this parser decides as follows:
//!
//! - *Whitespace* is [`char::is_whitespace`] (Unicode `White_Space`), which already covers
//!   every character of category Z that the XEP's definition adds.
//! - *Lines* end at `\n`; a `\r` right before it belongs to the line break, so CRLF bodies
//!   behave like LF ones (a "```\r" line closes a preformatted block).
//! - *Preformatted blocks* open on any line beginning with "```" (the rest of that line is
//!   ignored, so a one-line "```code```" opens a block that swallows the following lines)
//!   and close on a line that is exactly "```" (no trailing whitespace), or at the end of
//!   the parent block. A "```" line just after a quote that held an unclosed block is
//!   therefore outside that block and opens a new one.
//! - *Quotes* are runs of lines whose first byte is '>'; " > x" is not a quote. Each line
//!   loses its '>' and then at most one whitespace character before its rest is parsed as
//!   a child block. Nesting depth saturates at 255.
//! - *Openers* are judged from their surroundings alone: "after a different opening styling
//!   directive" means after a character that itself satisfied the opener rules, whether or
//!   not it is matched later (anything else would need backtracking).
//! - *Lazy matching*: a closer ends the innermost open span of its own kind. Spans nest and
//!   never overlap: openers opened inside that span and still unmatched are abandoned, so
//!   in "*a _b* c_" only the strong span exists.
//! - *Empty spans*: a closer right after its opener invalidates both, and that opener does
//!   not try a later closer ("**", "***" and "~~x~~" are plain text).
//! - *Preformatted spans* are matched when their opener is seen (with the first valid
//!   closing '`'), and nothing inside them is a directive, so a span opened before one
//!   cannot close inside it.

use std::ops::Range;

/// What a [`Span`] asks the renderer to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Style {
    /// `*strong*`, usually bold.
    Strong,
    /// `_emphasis_`, usually italic.
    Emphasis,
    /// `~strike~`, a line through the middle.
    Strike,
    /// `` `pre` ``, inline monospace; its contents carry no other span.
    Preformatted,
    /// The content lines of a "```" block, monospace, unstyled.
    PreBlock,
    /// A block quote.
    Quote,
}

/// One styled range of a body.
///
/// - `Strong`, `Emphasis`, `Strike`, `Preformatted`: the range includes the two directive
///   characters; [`Span::content`] excludes them.
/// - `PreBlock`: the range runs from the start of the first content line to the end of the
///   last one (line breaks between them included, fence lines excluded), and `content()`
///   is the same range. Inside a quote it also covers the '>' markers of the inner lines.
///   A block without any content character yields no span.
/// - `Quote`: the range runs from the first line's '>' to the end of the last line (its
///   line break excluded), and `content()` is the same range. `depth` is 1 for an outermost
///   quote, 2 for a quote inside it, and so on; every other style has depth 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub style: Style,
    pub start: usize,
    pub end: usize,
    pub depth: u8,
}

impl Span {
    /// The range without the directive characters. A directive is one ASCII byte and one
    /// UTF-16 code unit, so this is right for spans from [`parse`] and from [`to_utf16`].
    pub fn content(&self) -> Range<usize> {
        match self.style {
            Style::Strong | Style::Emphasis | Style::Strike | Style::Preformatted => {
                let start = self.start.saturating_add(1).min(self.end);
                let end = self.end.saturating_sub(1).max(start);
                start..end
            }
            Style::PreBlock | Style::Quote => self.start..self.end,
        }
    }
}

/// Byte offsets into `text` (start inclusive, end exclusive) of each styled range, sorted
/// by start, longer ranges first. Every offset lies on a char boundary. Runs in time
/// linear in the text (plus sorting the output) and never panics.
pub fn parse(text: &str) -> Vec<Span> {
    let mut out = Vec::new();
    // Quotes are parsed from a work list rather than by recursion, so a body of 64 KiB of
    // '>' cannot overflow the stack.
    let mut work: Vec<(Vec<Line>, u8)> = vec![(split_lines(text), 0)];
    let mut inline = InlineParser::default();
    while let Some((lines, depth)) = work.pop() {
        parse_blocks(text, &lines, depth, &mut inline, &mut work, &mut out);
    }
    out.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    out
}

/// The same spans with offsets converted from UTF-8 bytes to UTF-16 code units, the unit
/// Android's `String` and iOS's `NSAttributedString` index by. An offset inside a char
/// maps to the end of that char; an offset past the text maps to its end.
pub fn to_utf16(text: &str, spans: &[Span]) -> Vec<Span> {
    let mut offsets: Vec<usize> = spans.iter().flat_map(|s| [s.start, s.end]).collect();
    offsets.sort_unstable();
    offsets.dedup();
    // One walk over the text serves every offset, so converting stays linear.
    let mut units = Vec::with_capacity(offsets.len());
    let mut pending = offsets.iter().copied().peekable();
    let mut count = 0usize;
    for (at, c) in text.char_indices() {
        while pending.next_if(|&o| o <= at).is_some() {
            units.push(count);
        }
        count = count.saturating_add(c.len_utf16());
    }
    units.extend(pending.map(|_| count));
    let convert = |o: usize| {
        offsets
            .binary_search(&o)
            .ok()
            .and_then(|i| units.get(i).copied())
            .unwrap_or(count)
    };
    spans
        .iter()
        .map(|s| Span {
            style: s.style,
            start: convert(s.start),
            end: convert(s.end),
            depth: s.depth,
        })
        .collect()
}

/// A line of a block, as byte offsets into the whole text, without its line break and,
/// inside quotes, without the quote markers.
#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    end: usize,
}

impl Line {
    fn text(self, text: &str) -> &str {
        text.get(self.start..self.end).unwrap_or("")
    }
}

fn split_lines(text: &str) -> Vec<Line> {
    let bytes = text.as_bytes();
    let line = |start: usize, end: usize| {
        let end = match end.checked_sub(1) {
            Some(cr) if cr >= start && bytes.get(cr) == Some(&b'\r') => cr,
            _ => end,
        };
        Line { start, end }
    };
    let mut lines = Vec::new();
    let mut start = 0;
    for (at, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            lines.push(line(start, at));
            start = at + 1;
        }
    }
    lines.push(line(start, bytes.len()));
    lines
}

/// Parses the blocks of one parent block: plain lines get their spans at once, quotes are
/// queued on `work` with their child lines.
fn parse_blocks(
    text: &str,
    lines: &[Line],
    depth: u8,
    inline: &mut InlineParser,
    work: &mut Vec<(Vec<Line>, u8)>,
    out: &mut Vec<Span>,
) {
    let mut i = 0;
    while let Some(&first) = lines.get(i) {
        let line = first.text(text);
        if line.starts_with('>') {
            let mut children = Vec::new();
            let mut last = first;
            while let Some(&l) = lines.get(i) {
                let Some(rest) = l.text(text).strip_prefix('>') else {
                    break;
                };
                let trimmed = match rest.chars().next() {
                    Some(c) if c.is_whitespace() => c.len_utf8(),
                    _ => 0,
                };
                children.push(Line {
                    start: l.start + 1 + trimmed,
                    end: l.end,
                });
                last = l;
                i += 1;
            }
            let depth = depth.saturating_add(1);
            out.push(Span {
                style: Style::Quote,
                start: first.start,
                end: last.end,
                depth,
            });
            work.push((children, depth));
        } else if line.starts_with("```") {
            let content = i + 1;
            let mut close = content;
            while let Some(&l) = lines.get(close) {
                if l.text(text) == "```" {
                    break;
                }
                close += 1;
            }
            let first_content = lines.get(content);
            let last_content = close
                .checked_sub(1)
                .filter(|&k| k >= content)
                .and_then(|k| lines.get(k));
            if let (Some(a), Some(b)) = (first_content, last_content) {
                if a.start < b.end {
                    out.push(Span {
                        style: Style::PreBlock,
                        start: a.start,
                        end: b.end,
                        depth: 0,
                    });
                }
            }
            // Past the closing fence, or past the end of the parent block if there was none.
            i = close + 1;
        } else {
            inline.parse_line(text, first, out);
            i += 1;
        }
    }
}

/// The span directives that can stay open while the rest of the line is read; '`' never
/// does, since a preformatted span is matched as soon as its opener is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Strong = 0,
    Emphasis = 1,
    Strike = 2,
}

impl Kind {
    fn style(self) -> Style {
        match self {
            Kind::Strong => Style::Strong,
            Kind::Emphasis => Style::Emphasis,
            Kind::Strike => Style::Strike,
        }
    }
}

#[derive(Clone, Copy)]
enum Directive {
    Open(Kind),
    Pre,
}

fn directive(b: u8) -> Option<Directive> {
    match b {
        b'*' => Some(Directive::Open(Kind::Strong)),
        b'_' => Some(Directive::Open(Kind::Emphasis)),
        b'~' => Some(Directive::Open(Kind::Strike)),
        b'`' => Some(Directive::Pre),
        _ => None,
    }
}

/// Span parsing state, kept between lines only to reuse its allocations.
#[derive(Default)]
struct InlineParser {
    /// Open openers, outermost first: (kind, byte offset in the line).
    open: Vec<(Kind, usize)>,
    /// For each kind, the indices into `open` of its openers, so that finding the
    /// innermost opener of a kind stays O(1) however many others are open.
    by_kind: [Vec<usize>; 3],
}

impl InlineParser {
    fn parse_line(&mut self, text: &str, line: Line, out: &mut Vec<Span>) {
        let Some(s) = text.get(line.start..line.end) else {
            return;
        };
        self.open.clear();
        self.by_kind.iter_mut().for_each(Vec::clear);
        let bytes = s.as_bytes();
        let span = |style, start: usize, end: usize| Span {
            style,
            start: line.start + start,
            end: line.start + end,
            depth: 0,
        };
        // The last character that satisfied the opener rules: (offset, byte).
        let mut last_opener: Option<(usize, u8)> = None;
        let mut ticks = TickCloser::default();
        // Directives are ASCII, and an ASCII byte in UTF-8 is always a whole char, so
        // scanning bytes never lands inside a multibyte char.
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            let Some(dir) = directive(b) else {
                i += 1;
                continue;
            };
            let prev = s.get(..i).and_then(|p| p.chars().next_back());
            let after_text = prev.is_some_and(|c| !c.is_whitespace());

            if let (true, Directive::Open(kind)) = (after_text, dir) {
                if let Some(&at) = self.by_kind[kind as usize].last() {
                    let start = self.open.get(at).map_or(i, |&(_, p)| p);
                    while self.open.len() > at {
                        if let Some((k, _)) = self.open.pop() {
                            self.by_kind[k as usize].pop();
                        }
                    }
                    if i > start + 1 {
                        out.push(span(kind.style(), start, i + 1));
                    }
                    last_opener = None;
                    i += 1;
                    continue;
                }
            }

            let placed = prev.is_none_or(char::is_whitespace)
                || matches!(last_opener, Some((p, ob)) if p + 1 == i && ob != b);
            let followed = s
                .get(i + 1..)
                .and_then(|r| r.chars().next())
                .is_some_and(|c| !c.is_whitespace());
            if placed && followed {
                match dir {
                    Directive::Pre => {
                        if let Some(close) = ticks.next(s, i + 1) {
                            if close > i + 1 {
                                out.push(span(Style::Preformatted, i, close + 1));
                            }
                            last_opener = None;
                            i = close + 1;
                            continue;
                        }
                    }
                    Directive::Open(kind) => {
                        self.by_kind[kind as usize].push(self.open.len());
                        self.open.push((kind, i));
                    }
                }
                last_opener = Some((i, b));
            }
            i += 1;
        }
    }
}

/// Finds the first valid closing '`' at or after an offset. Queries only move forward
/// within a line, so caching the last answer keeps a line of many unclosed '`' linear.
#[derive(Default)]
struct TickCloser {
    /// (offset the last scan started at, what it found)
    cached: Option<(usize, Option<usize>)>,
}

impl TickCloser {
    fn next(&mut self, s: &str, from: usize) -> Option<usize> {
        if let Some((scanned_from, found)) = self.cached {
            if from >= scanned_from {
                match found {
                    None => return None,
                    Some(k) if k >= from => return Some(k),
                    Some(_) => {}
                }
            }
        }
        let found = Self::scan(s, from);
        self.cached = Some((from, found));
        found
    }

    fn scan(s: &str, from: usize) -> Option<usize> {
        let bytes = s.as_bytes();
        let mut k = from;
        while let Some(&b) = bytes.get(k) {
            if b == b'`'
                && s.get(..k)
                    .and_then(|p| p.chars().next_back())
                    .is_some_and(|c| !c.is_whitespace())
            {
                return Some(k);
            }
            k += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Style::*;

    /// The spans of `text` as (style, covered text, depth), in output order.
    fn styled(text: &str) -> Vec<(Style, &str, u8)> {
        parse(text)
            .into_iter()
            .map(|s| (s.style, &text[s.start..s.end], s.depth))
            .collect()
    }

    // ---- Every example of XEP-0393, in document order ----

    #[test]
    fn xep_example_plain_block_text() {
        let body = "There are three blocks in this body, one per line,\n\
                    but there is no *formatting\n\
                    as spans* may not escape blocks.";
        assert_eq!(styled(body), vec![]);
    }

    #[test]
    fn xep_example_preformatted_block_text() {
        let body = "```ignored\n(println \"Hello, world!\")\n```\n\n\
                    This should show up as monospace, preformatted text ⤴";
        assert_eq!(
            styled(body),
            vec![(PreBlock, "(println \"Hello, world!\")", 0)]
        );
    }

    #[test]
    fn xep_example_no_closing_preformatted_text_sequence() {
        let body = "> ```\n> (println \"Hello, world!\")\n\n\
                    The entire blockquote is a preformatted text block, but this line\n\
                    is plaintext!";
        assert_eq!(
            styled(body),
            vec![
                (Quote, "> ```\n> (println \"Hello, world!\")", 1),
                (PreBlock, "(println \"Hello, world!\")", 0),
            ]
        );
    }

    #[test]
    fn xep_example_quotation_ltr() {
        let body = "> That that is, is.\n\nSaid the old hermit of Prague.";
        assert_eq!(styled(body), vec![(Quote, "> That that is, is.", 1)]);
    }

    #[test]
    fn xep_example_nested_quotation() {
        let body = ">> That that is, is.\n> Said the old hermit of Prague.\n\nWho?";
        assert_eq!(
            styled(body),
            vec![
                (
                    Quote,
                    ">> That that is, is.\n> Said the old hermit of Prague.",
                    1
                ),
                (Quote, "> That that is, is.", 2),
            ]
        );
    }

    #[test]
    fn xep_span_examples_styled() {
        assert_eq!(styled("plain span"), vec![]);
        assert_eq!(styled("*strong span*"), vec![(Strong, "*strong span*", 0)]);
        assert_eq!(
            styled("plain _emphasis_ plain"),
            vec![(Emphasis, "_emphasis_", 0)]
        );
        assert_eq!(
            styled("`pre` plain *strong*"),
            vec![(Preformatted, "`pre`", 0), (Strong, "*strong*", 0)]
        );
        assert_eq!(styled("*strong*plain*"), vec![(Strong, "*strong*", 0)]);
        assert_eq!(styled("* plain *strong*"), vec![(Strong, "*strong*", 0)]);
    }

    #[test]
    fn xep_span_examples_unstyled() {
        for body in [
            "not strong*",
            "*not strong",
            "*not \n strong*",
            "*not *strong",
            "**",
            "***",
            "****",
        ] {
            assert_eq!(styled(body), vec![], "{body:?}");
        }
    }

    #[test]
    fn xep_example_plain() {
        assert_eq!(
            styled("Two spans, both *alike in dignity*"),
            vec![(Strong, "*alike in dignity*", 0)]
        );
    }

    #[test]
    fn xep_example_italic() {
        let body = "The full title is _Twelfth Night, or What You Will_ but\n\
                    _most_ people shorten it.";
        assert_eq!(
            styled(body),
            vec![
                (Emphasis, "_Twelfth Night, or What You Will_", 0),
                (Emphasis, "_most_", 0),
            ]
        );
    }

    #[test]
    fn xep_example_strong() {
        let body = "The full title is \"Twelfth Night, or What You Will\" but\n\
                    *most* people shorten it.";
        assert_eq!(styled(body), vec![(Strong, "*most*", 0)]);
    }

    #[test]
    fn xep_example_strike_through() {
        assert_eq!(
            styled("Everyone ~dis~likes cake."),
            vec![(Strike, "~dis~", 0)]
        );
    }

    #[test]
    fn xep_preformatted_span_examples() {
        assert_eq!(
            styled("This is `monospace`"),
            vec![(Preformatted, "`monospace`", 0)]
        );
        assert_eq!(
            styled("This is `*monospace*`"),
            vec![(Preformatted, "`*monospace*`", 0)]
        );
        assert_eq!(
            styled("This is *`monospace and bold`*"),
            vec![
                (Strong, "*`monospace and bold`*", 0),
                (Preformatted, "`monospace and bold`", 0),
            ]
        );
    }

    #[test]
    fn xep_example_monospace_text() {
        assert_eq!(
            styled("Wow, I can write in `monospace`!"),
            vec![(Preformatted, "`monospace`", 0)]
        );
    }

    #[test]
    fn xep_example_disabling_styling_body_still_parses() {
        // <unstyled/> is honoured by the caller skipping parse(); the body itself is a quote.
        assert_eq!(styled("> _ <"), vec![(Quote, "> _ <", 1)]);
    }

    #[test]
    fn xep_implementation_note_directives_are_in_the_range() {
        let text = "*emphasis*";
        let spans = parse(text);
        assert_eq!(spans.len(), 1);
        assert_eq!((spans[0].start, spans[0].end), (0, 10));
        assert_eq!(&text[spans[0].content()], "emphasis");
    }

    // ---- Spans ----

    #[test]
    fn multibyte_text_around_and_inside_spans() {
        assert_eq!(styled("*👍*"), vec![(Strong, "*👍*", 0)]);
        assert_eq!(
            styled("é *ü* 日本 _語_ ~🇫🇷~!"),
            vec![
                (Strong, "*ü*", 0),
                (Emphasis, "_語_", 0),
                (Strike, "~🇫🇷~", 0)
            ]
        );
        assert_eq!(styled("👍*not*"), vec![]);
        let text = "👍 `é`";
        let span = &parse(text)[0];
        assert_eq!(&text[span.content()], "é");
    }

    #[test]
    fn unicode_whitespace_counts_as_whitespace() {
        // NBSP and IDEOGRAPHIC SPACE (category Zs) after an opener / before a closer.
        assert_eq!(styled("*\u{a0}a*"), vec![]);
        assert_eq!(styled("*a\u{3000}*"), vec![]);
        // ...and as the separator before an opener.
        assert_eq!(styled("a\u{3000}*b*"), vec![(Strong, "*b*", 0)]);
        // ZERO WIDTH SPACE is not whitespace (format character), so it blocks an opener.
        assert_eq!(styled("a\u{200b}*b*"), vec![]);
    }

    #[test]
    fn unterminated_directives() {
        for body in ["*a", "_a b", "~", "`code", "a `b", "*a\nb*", "`a\nb`"] {
            assert_eq!(styled(body), vec![], "{body:?}");
        }
        assert_eq!(styled("*a _b_"), vec![(Emphasis, "_b_", 0)]);
    }

    #[test]
    fn directives_at_line_ends() {
        assert_eq!(
            styled("a *b*\n*c*\nd *\n* e"),
            vec![(Strong, "*b*", 0), (Strong, "*c*", 0)]
        );
        assert_eq!(styled("end_\n_start"), vec![]);
    }

    #[test]
    fn crlf_line_breaks() {
        assert_eq!(
            styled("*a*\r\n_b_\r\n"),
            vec![(Strong, "*a*", 0), (Emphasis, "_b_", 0)]
        );
        assert_eq!(
            styled("```\r\ncode\r\n```\r\n*x*"),
            vec![(PreBlock, "code", 0), (Strong, "*x*", 0)]
        );
        assert_eq!(styled("> q\r\nafter"), vec![(Quote, "> q", 1)]);
    }

    #[test]
    fn nested_spans_and_chained_openers() {
        assert_eq!(
            styled("_*a*_"),
            vec![(Emphasis, "_*a*_", 0), (Strong, "*a*", 0)]
        );
        assert_eq!(
            styled("*_~a~_*"),
            vec![
                (Strong, "*_~a~_*", 0),
                (Emphasis, "_~a~_", 0),
                (Strike, "~a~", 0)
            ]
        );
        assert_eq!(
            styled("*bold _both_ bold*"),
            vec![(Strong, "*bold _both_ bold*", 0), (Emphasis, "_both_", 0)]
        );
        // An opener must follow a *different* opener, the start, or whitespace.
        assert_eq!(styled("a*b*"), vec![]);
        assert_eq!(styled("*a*_b_"), vec![(Strong, "*a*", 0)]);
    }

    #[test]
    fn closer_ends_innermost_span_and_spans_never_overlap() {
        assert_eq!(styled("*a *b*"), vec![(Strong, "*b*", 0)]);
        assert_eq!(styled("*a _b* c_"), vec![(Strong, "*a _b*", 0)]);
        assert_eq!(styled("_a *b_ c*"), vec![(Emphasis, "_a *b_", 0)]);
        // Lazy: the first closer wins, the later one is plain text.
        assert_eq!(styled("*a* b*"), vec![(Strong, "*a*", 0)]);
    }

    #[test]
    fn empty_spans_invalidate_both_directives() {
        for body in ["__", "~~", "``", "~~x~~", "**a**", "``*a*", "a ** b"] {
            assert_eq!(styled(body), vec![], "{body:?}");
        }
        // A closer may itself be preceded by a different opener: "_" is the content here.
        assert_eq!(styled("*_*"), vec![(Strong, "*_*", 0)]);
    }

    #[test]
    fn preformatted_span_is_opaque() {
        assert_eq!(
            styled("*a `b* c` d*"),
            vec![(Strong, "*a `b* c` d*", 0), (Preformatted, "`b* c`", 0)]
        );
        assert_eq!(styled("*a `b* c`"), vec![(Preformatted, "`b* c`", 0)]);
        assert_eq!(styled("`a *b` c*"), vec![(Preformatted, "`a *b`", 0)]);
        assert_eq!(styled("`a ``"), vec![(Preformatted, "`a ``", 0)]);
        assert_eq!(
            styled("`a` `b`"),
            vec![(Preformatted, "`a`", 0), (Preformatted, "`b`", 0)]
        );
        // An unmatched '`' is still an opener for the one after it.
        assert_eq!(styled("`*b*"), vec![(Strong, "*b*", 0)]);
    }

    // ---- Blocks ----

    #[test]
    fn quote_trims_one_whitespace_and_nests() {
        assert_eq!(
            styled(">  *a*"),
            vec![(Quote, ">  *a*", 1), (Strong, "*a*", 0)],
            "one space is trimmed, the other one still precedes the opener"
        );
        assert_eq!(
            styled(">*a*\n>\t_b_"),
            vec![
                (Quote, ">*a*\n>\t_b_", 1),
                (Strong, "*a*", 0),
                (Emphasis, "_b_", 0)
            ]
        );
        assert_eq!(
            styled("> > b"),
            vec![(Quote, "> > b", 1), (Quote, "> b", 2)]
        );
        assert_eq!(styled(" > not a quote"), vec![]);
        assert_eq!(
            styled("> a\n> b\nc\n> d"),
            vec![(Quote, "> a\n> b", 1), (Quote, "> d", 1)]
        );
        assert_eq!(styled(">"), vec![(Quote, ">", 1)]);
    }

    #[test]
    fn spans_inside_quotes() {
        let text = "> *a*\n>> _b_";
        assert_eq!(
            styled(text),
            vec![
                (Quote, "> *a*\n>> _b_", 1),
                (Strong, "*a*", 0),
                (Quote, "> _b_", 2),
                (Emphasis, "_b_", 0),
            ]
        );
    }

    #[test]
    fn preformatted_block_is_not_styled() {
        assert_eq!(
            styled("```\n*a*\n> b\n```\n*c*"),
            vec![(PreBlock, "*a*\n> b", 0), (Strong, "*c*", 0)]
        );
    }

    #[test]
    fn preformatted_block_closing_line_is_exact() {
        assert_eq!(
            styled("```\na\n``` \nb\n````\nc\n```\nd"),
            vec![(PreBlock, "a\n``` \nb\n````\nc", 0)]
        );
        assert_eq!(
            styled("```rust\nlet x = 1;"),
            vec![(PreBlock, "let x = 1;", 0)]
        );
    }

    #[test]
    fn empty_or_one_line_preformatted_blocks() {
        assert_eq!(styled("```\n```"), vec![]);
        assert_eq!(styled("```\n\n```\n*x*"), vec![(Strong, "*x*", 0)]);
        assert_eq!(styled("```\n\n\n```"), vec![(PreBlock, "\n", 0)]);
        // A line that begins with ``` opens a block even when it ends with ``` too.
        assert_eq!(styled("```code``` *x*"), vec![]);
        assert_eq!(styled("```code```\n*x*"), vec![(PreBlock, "*x*", 0)]);
        assert_eq!(styled("a ```b```"), vec![]);
    }

    #[test]
    fn nested_quote_with_preformatted_block() {
        let text = ">> ```\n>> code *x*\n>> ```\n> *y*";
        assert_eq!(
            styled(text),
            vec![
                (Quote, text, 1),
                (Quote, "> ```\n>> code *x*\n>> ```", 2),
                (PreBlock, "code *x*", 0),
                (Strong, "*y*", 0),
            ]
        );
        // The inner quote ends the block: "> *y*" is plain text of the outer quote.
        let text = ">> ```\n>> code\n> *y*";
        assert_eq!(
            styled(text),
            vec![
                (Quote, text, 1),
                (Quote, "> ```\n>> code", 2),
                (PreBlock, "code", 0),
                (Strong, "*y*", 0),
            ]
        );
    }

    #[test]
    fn quote_ends_preformatted_block() {
        assert_eq!(
            styled("> ```\n> code *x*\nafter *y*"),
            vec![
                (Quote, "> ```\n> code *x*", 1),
                (PreBlock, "code *x*", 0),
                (Strong, "*y*", 0),
            ]
        );
        // A fence after the quote is not the quote's closing fence: it opens a new block.
        assert_eq!(
            styled("> ```\n> a\n```\nb"),
            vec![
                (Quote, "> ```\n> a", 1),
                (PreBlock, "a", 0),
                (PreBlock, "b", 0)
            ]
        );
        // A preformatted block spanning several quoted lines covers their inner markers.
        assert_eq!(
            styled("> ```\n> a\n> b\n> ```"),
            vec![
                (Quote, "> ```\n> a\n> b\n> ```", 1),
                (PreBlock, "a\n> b", 0)
            ]
        );
    }

    #[test]
    fn quote_inside_preformatted_block_is_text() {
        assert_eq!(
            styled("```\n> a\n```\n> b"),
            vec![(PreBlock, "> a", 0), (Quote, "> b", 1)]
        );
    }

    #[test]
    fn very_deep_quotes_saturate_depth() {
        let text = format!("{}x", ">".repeat(300));
        let spans = parse(&text);
        assert_eq!(spans.len(), 300);
        assert!(spans
            .iter()
            .all(|s| s.style == Quote && s.end == text.len()));
        assert_eq!(spans[0].depth, 1);
        assert_eq!(spans[254].depth, 255);
        assert_eq!(spans[299].depth, 255);
    }

    // ---- UTF-16 ----

    #[test]
    fn utf16_offsets() {
        let text = "👍 *é* `x`\n> 日本";
        let spans = parse(text);
        let wide = to_utf16(text, &spans);
        let units: Vec<u16> = text.encode_utf16().collect();
        let slice = |s: &Span| String::from_utf16(&units[s.start..s.end]).unwrap();
        let got: Vec<(Style, String)> = wide.iter().map(|s| (s.style, slice(s))).collect();
        assert_eq!(
            got,
            vec![
                (Strong, "*é*".to_owned()),
                (Preformatted, "`x`".to_owned()),
                (Quote, "> 日本".to_owned()),
            ]
        );
        assert_eq!((wide[0].start, wide[0].end), (3, 6));
        assert_eq!(String::from_utf16(&units[wide[0].content()]).unwrap(), "é");
    }

    #[test]
    fn utf16_tolerates_bad_offsets() {
        let text = "é👍";
        let bogus = [
            Span {
                style: Strong,
                start: 1,
                end: 3,
                depth: 0,
            },
            Span {
                style: Quote,
                start: 0,
                end: 99,
                depth: 1,
            },
        ];
        let wide = to_utf16(text, &bogus);
        assert_eq!((wide[0].start, wide[0].end), (1, 3));
        assert_eq!((wide[1].start, wide[1].end), (0, 3));
        assert_eq!(to_utf16("", &bogus)[1].end, 0);
    }

    // ---- Robustness ----

    /// Checks the invariants every output must satisfy, whatever the input.
    fn check_invariants(text: &str) {
        let spans = parse(text);
        for pair in spans.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                a.start < b.start || (a.start == b.start && a.end >= b.end),
                "{text:?}"
            );
        }
        for s in &spans {
            assert!(s.start <= s.end && s.end <= text.len(), "{s:?} in {text:?}");
            assert!(text.is_char_boundary(s.start) && text.is_char_boundary(s.end));
            let c = s.content();
            assert!(s.start <= c.start && c.start <= c.end && c.end <= s.end);
            assert!(text.is_char_boundary(c.start) && text.is_char_boundary(c.end));
            let bytes = text.as_bytes();
            let marker = match s.style {
                Strong => Some(b'*'),
                Emphasis => Some(b'_'),
                Strike => Some(b'~'),
                Preformatted => Some(b'`'),
                Quote => Some(b'>'),
                PreBlock => None,
            };
            if let Some(m) = marker {
                assert_eq!(bytes[s.start], m, "{s:?} in {text:?}");
            }
            if s.style != Quote && s.style != PreBlock {
                assert_eq!(bytes[s.end - 1], bytes[s.start]);
                assert!(!c.is_empty(), "empty span {s:?} in {text:?}");
                assert!(!text[s.start..s.end].contains('\n'));
                assert_eq!(s.depth, 0);
            }
            if s.style == Quote {
                assert!(s.depth >= 1);
            }
        }
        // UTF-16 offset of every byte boundary, computed once so big inputs stay fast.
        let mut utf16_at = vec![0; text.len() + 1];
        let mut units = 0;
        for (at, c) in text.char_indices() {
            utf16_at[at] = units;
            units += c.len_utf16();
        }
        utf16_at[text.len()] = units;
        let wide = to_utf16(text, &spans);
        assert_eq!(wide.len(), spans.len());
        for (w, s) in wide.iter().zip(&spans) {
            assert_eq!((w.start, w.end), (utf16_at[s.start], utf16_at[s.end]));
            assert_eq!((w.style, w.depth), (s.style, s.depth));
        }
    }

    #[test]
    fn random_inputs_keep_invariants() {
        const ALPHABET: [&str; 16] = [
            "*", "_", "~", "`", "```", ">", "> ", " ", "\n", "\r\n", "a", "é", "👍", "\u{3000}",
            "\u{a0}", "\t",
        ];
        // Numerical Recipes LCG: deterministic and dependency-free.
        let mut state: u64 = 0x5eed;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        for _ in 0..20_000 {
            let len = next() % 40;
            let text: String = (0..len)
                .map(|_| ALPHABET[next() % ALPHABET.len()])
                .collect();
            check_invariants(&text);
        }
    }

    #[test]
    fn large_inputs_stay_linear() {
        // Each of these is quadratic for a naive parser (rescanning for closers, searching
        // the open stack, recursing per '>'); no timing assertion, a regression just hangs.
        let size = 64 * 1024;
        let bodies = [
            "*_~".repeat(size / 3),
            "`a ".repeat(size / 3),
            format!("{}{}", "_a ".repeat(size / 6), "b* ".repeat(size / 6)),
            format!("{}{}", "*a ".repeat(size / 6), "b* ".repeat(size / 6)),
            ">".repeat(size),
            "> ```\n".repeat(size / 6),
            "```\n".repeat(size / 4),
            "*👍* ".repeat(size / 8),
        ];
        for body in &bodies {
            check_invariants(body);
        }
        assert_eq!(parse(&"*a* ".repeat(size / 4)).len(), size / 4);
    }
}
