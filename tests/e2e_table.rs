//! End-to-end: the snapshot table stays aligned with wide characters and long host names.

mod common;

use common::*;

/// Terminal columns of `text`: CJK and other wide characters take two.
fn width(text: &str) -> usize {
    text.chars()
        .map(|c| {
            if ('\u{1100}'..='\u{115f}').contains(&c)
                || ('\u{2e80}'..='\u{a4cf}').contains(&c)
                || ('\u{ac00}'..='\u{d7a3}').contains(&c)
                || ('\u{f900}'..='\u{faff}').contains(&c)
                || ('\u{ff00}'..='\u{ff60}').contains(&c)
            {
                2
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn snapshot_table_is_aligned_by_display_width() {
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("f"), "f\n").expect("write");
    c.backup_with(&[&src], &["--host", "short"]);
    c.backup_with(&[&src], &["--host", "ホスト名前-a-rather-long-host-name.example.org", "--tag", "日本語,x"]);
    let out = c.ok(&["snapshots"]);
    let text = out.stdout();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 4, "header, two rows, count\n{out}");
    let column = |line: &str, what: &str| {
        let at = line.find(what).unwrap_or_else(|| panic!("{what:?} not in {line:?}\n{out}"));
        width(&line[..at])
    };
    let signed = column(lines[0], "Signed by");
    let paths = column(lines[0], "Paths");
    for row in &lines[1..3] {
        assert_eq!(column(row, "repository key"), signed, "misaligned:\n{text}");
        assert_eq!(column(row, &src.display().to_string()), paths, "misaligned:\n{text}");
    }
    assert_eq!(lines[3], "2 snapshots");
}
