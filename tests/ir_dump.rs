//! Golden IR: every `tests/ir/NAME.nn` must check without errors, and the
//! dump of its models (`nnc ir`) must equal `tests/ir/NAME.ir` byte for byte.
//! `NNC_BLESS=1 cargo test --test ir_dump` rewrites the expected files.

mod golden;

use nnc::frontend::check_source;
use nnc::ir::dump::dump;
use nnc::syntax::FsLoader;

#[test]
fn models_lower_to_their_expected_ir() {
    golden::run("tests/ir", "ir", |name, text| {
        let checked = check_source(name, text, &FsLoader, &Default::default());
        if checked.has_errors() {
            return Err(format!(
                "does not check:\n{}",
                checked.report().render(false)
            ));
        }
        let dumps: Vec<String> = checked.models.iter().map(dump).collect();
        Ok(dumps.join("\n"))
    });
}
