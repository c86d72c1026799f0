//! The overview's exchange-volume chart: horizontal bars as inline SVG, drawn on the server so
//! the page needs no script and no download. Pure: rows in, markup out.

use std::fmt::Write;

/// One bar: a label (peer · dataset) and the records sent and received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// What the bar is about.
    pub label: String,
    /// Records this node sent.
    pub sent: u64,
    /// Records this node received.
    pub received: u64,
}

const ROW: u32 = 26;
const LABEL_W: u32 = 300;
const BAR_W: u32 = 420;
const WIDTH: u32 = LABEL_W + BAR_W + 90;

/// Escapes text for SVG (XML) content and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The bars as an SVG element, sent (dark) and received (light) stacked, scaled to the
/// largest total; `legend` names the two colours; `title` is the chart's accessible name.
pub fn svg(bars: &[Bar], legend: (&str, &str), title: &str) -> String {
    let max = bars.iter().map(|b| b.sent.saturating_add(b.received)).max().unwrap_or(0).max(1);
    let height = ROW * (bars.len() as u32 + 1) + 10;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}"><title>{}</title>"#,
        escape(title)
    );
    let _ = write!(
        s,
        r#"<rect x="{LABEL_W}" y="4" width="12" height="12" class="sent"/><text x="{}" y="15">{}</text><rect x="{}" y="4" width="12" height="12" class="received"/><text x="{}" y="15">{}</text>"#,
        LABEL_W + 16,
        escape(legend.0),
        LABEL_W + 180,
        LABEL_W + 196,
        escape(legend.1)
    );
    for (i, b) in bars.iter().enumerate() {
        let y = ROW * (i as u32 + 1) + 4;
        let w = |n: u64| ((u128::from(n) * u128::from(BAR_W)) / u128::from(max)) as u32;
        let (ws, wr) = (w(b.sent), w(b.received));
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{LABEL_W}" y="{y}" width="{ws}" height="18" class="sent"><title>{}</title></rect><rect x="{}" y="{y}" width="{wr}" height="18" class="received"><title>{}</title></rect><text x="{}" y="{}">{}</text>"#,
            LABEL_W - 8,
            y + 14,
            escape(&b.label),
            b.sent,
            LABEL_W + ws,
            b.received,
            LABEL_W + ws + wr + 6,
            y + 14,
            b.sent.saturating_add(b.received)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_labels_are_escaped() {
        let bars = vec![
            Bar { label: "police@wuxi.liangxi · 案件<x>".into(), sent: 300, received: 100 },
            Bar { label: "court@wuxi.xinwu · cases".into(), sent: 0, received: 200 },
        ];
        let s = svg(&bars, ("sent", "received"), "volume");
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert!(s.contains("案件&lt;x&gt;"), "{s}");
        assert!(!s.contains("<x>"));
        // 400 is the largest total: 300 sent is three quarters of the bar width.
        assert!(s.contains(&format!(r#"width="{}" height="18" class="sent""#, BAR_W * 3 / 4)), "{s}");
        assert!(s.contains(&format!(r#"width="{}" height="18" class="received""#, BAR_W / 2)), "{s}");
    }

    #[test]
    fn no_bars_is_a_valid_empty_chart() {
        let s = svg(&[], ("a", "b"), "t");
        assert!(s.contains("<title>t</title>") && s.ends_with("</svg>"));
    }
}
