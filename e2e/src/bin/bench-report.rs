//! `bench-report DIR MARKDOWN SVG`: turns what `make bench` captured (one
//! `<bench>.md` per benchmark in DIR, in the order of `DIR/order`) into
//! `docs/benchmarks.md` and a plot of it, `docs/benchmarks.svg`: one panel
//! per table whose second column is a median (ms) or a rate (packets/s),
//! one bar per row, so the plot always shows what the tables say.

use std::{fmt::Write as _, fs, path::Path};

/// A table of the bench output: its title (the line before it), the
/// second column's header, and (row label, value) pairs.
struct Table {
    title: String,
    unit: String,
    rows: Vec<(String, f64)>,
}

fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_owned())
        .collect()
}

/// The plottable tables of one bench's output.
fn tables(bench: &str, text: &str) -> Vec<Table> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < lines.len() {
        let is_header =
            lines[i].trim_start().starts_with('|') && lines[i + 1].trim_start().starts_with("|-");
        if !is_header {
            i += 1;
            continue;
        }
        let header = cells(lines[i]);
        let title = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map_or(bench, |l| l.trim())
            .to_owned();
        let unit = header.get(1).cloned().unwrap_or_default();
        let plottable = unit.contains("median") || unit.contains("packets/s");
        let mut rows = Vec::new();
        i += 2;
        while i < lines.len() && lines[i].trim_start().starts_with('|') {
            let c = cells(lines[i]);
            let value = c
                .get(1)
                .and_then(|v| v.split_whitespace().next())
                .map(|v| v.replace(',', ""))
                .and_then(|v| v.parse::<f64>().ok());
            if let (true, Some(v)) = (plottable, value) {
                rows.push((c[0].clone(), v));
            }
            i += 1;
        }
        if !rows.is_empty() {
            out.push(Table {
                title: format!("{bench}: {title}"),
                unit,
                rows,
            });
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Horizontal bar charts, one panel per table, each scaled to its own
/// largest value.
fn svg(tables: &[Table]) -> String {
    const W: f64 = 900.0;
    const LABEL: f64 = 380.0;
    const BAR_H: f64 = 18.0;
    const GAP: f64 = 6.0;
    let mut body = String::new();
    let mut y = 20.0;
    for t in tables {
        writeln!(
            body,
            r#"<text x="10" y="{y}" font-weight="bold">{} ({})</text>"#,
            escape(&t.title),
            escape(&t.unit)
        )
        .unwrap();
        y += 10.0;
        let max = t.rows.iter().map(|r| r.1).fold(0.0_f64, f64::max).max(1e-9);
        for (label, v) in &t.rows {
            let w = (W - LABEL - 110.0) * v / max;
            writeln!(
                body,
                r##"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{LABEL}" y="{y}" width="{w:.1}" height="{BAR_H}" fill="#4a7ab5"/><text x="{:.1}" y="{}">{}</text>"##,
                LABEL - 8.0,
                y + BAR_H - 4.0,
                escape(label),
                LABEL + w + 6.0,
                y + BAR_H - 4.0,
                if *v >= 1000.0 { format!("{v:.0}") } else { format!("{v:.2}") }
            )
            .unwrap();
            y += BAR_H + GAP;
        }
        y += 24.0;
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{y}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, md_path, svg_path] = args.as_slice() else {
        eprintln!("usage: bench-report DIR MARKDOWN SVG");
        std::process::exit(2);
    };
    let dir = Path::new(dir);
    let order = fs::read_to_string(dir.join("order")).unwrap_or_else(|e| {
        eprintln!(
            "bench-report: {}/order: {e} (make bench writes it)",
            dir.display()
        );
        std::process::exit(1);
    });
    let machine = fs::read_to_string(dir.join("machine")).unwrap_or_default();
    let mut md = String::from(
        "# Benchmarks\n\n\
         Written by `make bench` (do not edit): every benchmark measures its baseline in the \
         same run, on the same machine, and prints medians and ratios. The plot shows each \
         table's second column.\n\n",
    );
    if !machine.trim().is_empty() {
        writeln!(md, "Measured on: {}\n", machine.trim()).unwrap();
    }
    let svg_name = Path::new(svg_path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    writeln!(md, "![the benchmark tables as bars]({svg_name})\n").unwrap();
    let mut all = Vec::new();
    for bench in order.split_whitespace() {
        let text = fs::read_to_string(dir.join(format!("{bench}.md"))).unwrap_or_else(|e| {
            eprintln!("bench-report: {bench}: {e}");
            std::process::exit(1);
        });
        writeln!(md, "## `{bench}`\n").unwrap();
        md.push_str(text.trim());
        md.push_str("\n\n");
        all.extend(tables(bench, &text));
    }
    fs::write(md_path, md).expect("write the markdown");
    fs::write(svg_path, svg(&all)).expect("write the plot");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_with_a_median_or_rate_column_are_plotted() {
        let text = "\nADD+DEL (3 runs each)\n\n| path | median ms | p90 ms |\n|---|---|---|\n| a | 1.50 | 2 |\n| b | 3.00 | 4 |\n\n| figure | value | target |\n|---|---|---|\n| x | 1 | 2 |\n";
        let t = tables("bench", text);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].title, "bench: ADD+DEL (3 runs each)");
        assert_eq!(t[0].rows, [("a".to_owned(), 1.5), ("b".to_owned(), 3.0)]);
        let s = svg(&t);
        assert_eq!(s.matches("<rect x=").count(), 2);
        assert!(s.contains(">3.00<"));
    }
}
