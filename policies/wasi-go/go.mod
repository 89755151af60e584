module kubewarden-rs/policies/wasi-go

go 1.24
