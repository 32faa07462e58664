//! Golden diagnostics: every `tests/invalid/NAME.nn` is checked and its
//! rendered report (plain text) must equal `tests/invalid/NAME.stderr` byte
//! for byte. `NNC_BLESS=1 cargo test --test diagnostics` rewrites the
//! expected files from the current output.

mod golden;

use nnc::frontend::check_source;
use nnc::syntax::FsLoader;

#[test]
fn invalid_programs_render_their_expected_diagnostics() {
    golden::run("tests/invalid", "stderr", |name, text| {
        let checked = check_source(name, text, &FsLoader, &Default::default());
        let report = checked.report();
        if report.diagnostics.is_empty() {
            return Err("expected at least one diagnostic, got none".into());
        }
        Ok(report.render(false))
    });
}
