//! Trains the digits MLP from Rust: `cargo run --release --example embed`.
use nnc::runtime::data::batch::Batches;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = nnc::Model::from_file("examples/mlp_digits.nn")?; // parse + check
    let (train, val) = model.data()?; // the train block's data, split 80/20
    let val = val.ok_or("no validation data")?;
    let opts = nnc::Options {
        batch: 32,
        ..Default::default()
    };
    let mut net = model.compile(&opts)?; // Cranelift: fused forward + backward + Adam
    for epoch in 0..30 {
        let mut loss = 0.0;
        for (x, y) in Batches::shuffled(&train, 32, epoch)? {
            loss += net.train_step(&x, &y)? * x.len() as f32 / train.len() as f32;
        }
        let acc = net.evaluate(&val)?.accuracy.unwrap_or(0.0) * 100.0;
        println!(
            "epoch {:2}  loss {loss:.4}  validation {acc:.2}%",
            epoch + 1
        );
    }
    let scores = net.forward(val.x.rows(0, 1))?; // [1, 10] class scores
    println!("scores of a validation digit: {scores:.1}");
    net.save("mlp_digits.safetensors")?; // PyTorch state_dict names
    Ok(())
}
