(module
  (memory (export "memory") 1)
  (table 1 funcref)
  (func (export "_start") (drop (table.grow (ref.null func) (i32.const 100000000)))))
