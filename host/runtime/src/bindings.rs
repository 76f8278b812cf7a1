//! Host bindings generated from the WIT packages, one module per supported version of
//! `everruns:capability` (world `plugin` of each). Components of every version load side by
//! side; a 0.1.0 component keeps working unchanged.

/// `everruns:capability@0.1.0` (`wit/0.1.0`): capability exports only.
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../../wit/0.1.0",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

/// `everruns:capability@0.2.0` (`wit/0.2.0`): adds the optional `hooks` export.
pub(crate) mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../../wit/0.2.0",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}
