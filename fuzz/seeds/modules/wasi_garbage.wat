(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $rand (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $rand (i32.const 65530) (i32.const 100)))
    (drop (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 100000)
      (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 65535)))))
