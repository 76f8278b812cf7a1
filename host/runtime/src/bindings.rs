//! Host bindings generated from `wit/capability.wit` (world `plugin`), generated once.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
    imports: { default: async },
    exports: { default: async },
});
