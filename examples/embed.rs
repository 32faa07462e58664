//! Trains the digits MLP from Rust: `cargo run --release --example embed`.
use nnc::runtime::data::batch::Batches;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = nnc::Model::from_file("examples/mlp_digits.nn")?; // parse + check
    let (train, val) = model.data()?; // the train block's data, split 80/20
    let val = val.ok_or("no validation split")?;
    let mut net = model.compile(&nnc::Options {
        batch: 32,
        ..Default::default()
    })?;
    for epoch in 0..30 {
        let mut loss = 0.0; // fused forward + backward + Adam, compiled with Cranelift
        for (x, y) in Batches::shuffled(&train, 32, epoch)? {
            loss += net.train_step(&x, &y)? * x.len() as f32 / train.len() as f32;
        }
        let acc = net.evaluate(&val)?.accuracy.unwrap_or(0.0) * 100.0;
        println!(
            "epoch {:2}  loss {loss:.4}  validation accuracy {acc:.2}%",
            epoch + 1
        );
    }
    let logits = net.forward(val.x.rows(0, 8))?; // [8, 10] class scores
    println!("scores of the first validation digit: {:.2}", logits.row(0));
    net.save("mlp_digits.safetensors")?; // PyTorch state_dict names
    Ok(())
}
