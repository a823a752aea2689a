//! Prints its arguments and environment, one per line, so tests can check exactly what arrived.
fn main() {
    for (i, arg) in std::env::args().enumerate() {
        println!("arg[{i}]={arg}");
    }
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (k, v) in vars {
        println!("env:{k}={v}");
    }
}
