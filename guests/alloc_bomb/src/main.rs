//! Hostile: grows linear memory 1 MiB at a time, touching every page, until the allocator fails.
fn main() {
    println!("allocating");
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        for i in (0..block.len()).step_by(4096) {
            block[i] = 1;
        }
        blocks.push(std::hint::black_box(block));
        if blocks.len() % 256 == 0 {
            eprintln!("{} MiB", blocks.len());
        }
    }
}
