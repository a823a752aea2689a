//! A component with typed exports (see wit/tools.wit), built with `wit-bindgen`'s macros for
//! wasm32-wasip2, which produces a component directly.

wit_bindgen::generate!({ world: "tools-world", path: "wit" });

use exports::zeroboot::tools::tools::{Color, Guest as Tools, Order, Perms, Point, Shape};

struct Component;

static mut CALLS: u32 = 0;

impl Tools for Component {
    fn add(a: i32, b: i32) -> i32 {
        a.wrapping_add(b)
    }

    fn area(s: Shape) -> f64 {
        match s {
            Shape::Circle(r) => std::f64::consts::PI * r * r,
            Shape::Rect(p) => f64::from(p.x) * f64::from(p.y),
            Shape::Empty => 0.0,
        }
    }

    fn summarize(o: Order) -> String {
        let color = match o.color {
            Color::Red => "red",
            Color::Green => "green",
            Color::Blue => "blue",
        };
        format!(
            "#{} {} [{}] {} {}",
            o.id,
            o.name,
            o.tags.join(","),
            o.note.as_deref().unwrap_or("-"),
            color
        )
    }

    fn find(items: Vec<String>, needle: String) -> Option<u32> {
        items.iter().position(|i| *i == needle).map(|i| i as u32)
    }

    fn divide(a: f64, b: f64) -> Result<f64, String> {
        if b == 0.0 { Err("division by zero".into()) } else { Ok(a / b) }
    }

    fn shift(p: Point, dx: i32, dy: i32) -> Point {
        Point { x: p.x + dx, y: p.y + dy }
    }

    fn granted(p: Perms) -> Vec<String> {
        let mut out = Vec::new();
        for (flag, name) in [(Perms::READ, "read"), (Perms::WRITE, "write"), (Perms::EXEC, "exec")] {
            if p.contains(flag) {
                out.push(name.to_string());
            }
        }
        out
    }

    fn swap(t: (u8, String)) -> (String, u8) {
        (t.1, t.0)
    }

    fn bump() -> u32 {
        // SAFETY: a component instance runs one call at a time on one thread.
        unsafe {
            CALLS += 1;
            CALLS
        }
    }

    fn spin() {
        let mut x = 0u64;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}

impl Guest for Component {
    fn greet(name: String) -> String {
        format!("hello, {name}!")
    }

    fn wizer_initialize() {
        // SAFETY: a component instance runs one call at a time on one thread.
        unsafe { CALLS = 100 };
    }
}

export!(Component);
