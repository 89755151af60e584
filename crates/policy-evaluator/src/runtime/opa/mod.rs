//! The host side of OPA's WebAssembly ABI: Rego compiled with `opa build -t wasm`, run in the
//! `opa` and `gatekeeper` execution modes.
//!
//! The guest imports its linear memory (`env.memory`) and four kinds of functions: `opa_abort`,
//! `opa_println` and `opa_builtin0`..`opa_builtin4` for the built-in functions the Rego compiler
//! could not compile into the module (`sprintf`, `time.now_ns`, ...). Loading asks the module
//! which of those it needs (`builtins()`) and refuses it when one is missing here, naming them.
//!
//! One evaluation, in a fresh instance: the data document and the input are copied in
//! (`opa_malloc`, `opa_json_parse`), an evaluation context is set up for entrypoint 0 (the
//! first `-e` of `opa build`, as upstream), `eval` runs, and the result set is dumped as JSON.
//! A built-in that fails makes its expression undefined, as OPA does in non-strict mode.

mod builtins;
mod modes;
mod sprintf;

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use wasmtime::{
    AsContextMut, Caller, Extern, ExternType, Instance, Linker, Memory, MemoryType, Module, Store,
    TypedFunc,
};

use crate::error::{EvaluationError, LoadError, classify};
use crate::limits::{EvaluationLimits, MemoryLimiter, deadline_ticks};
use crate::reuse::Reusable;

pub(crate) use builtins::Builtin;
pub(crate) use modes::{
    EMPTY_DATA, GatekeeperInput, OpaInput, gatekeeper_response, inventory_data, kubernetes_data,
    opa_response,
};

/// The store data of an OPA instance.
pub(crate) struct OpaState {
    pub(crate) limiter: MemoryLimiter,
    /// Built-ins by the id the module gave them.
    builtins: Arc<[Option<Builtin>]>,
    policy_id: Arc<str>,
    /// What the guest passed to `opa_abort`, if it did.
    abort_message: Option<String>,
    /// The memory the host made for the current instance (OPA modules import theirs).
    memory: Option<Memory>,
}

impl OpaState {
    pub(crate) fn new(limiter: MemoryLimiter, module: &OpaModule, policy_id: Arc<str>) -> Self {
        OpaState {
            limiter,
            builtins: module.builtins.clone(),
            policy_id,
            abort_message: None,
            memory: None,
        }
    }

    pub(crate) fn abort_message(&self) -> Option<&str> {
        self.abort_message.as_deref()
    }
}

/// A compiled Rego module, its imports linked and its built-ins resolved.
pub(crate) struct OpaModule {
    module: Module,
    linker: Linker<OpaState>,
    memory_type: MemoryType,
    builtins: Arc<[Option<Builtin>]>,
}

/// Pages of the imported memory when the module does not say (OPA asks for 2).
const DEFAULT_MEMORY_PAGES: u64 = 5;

impl OpaModule {
    /// Links `module` and checks, in a throw-away instance, that it has an entrypoint 0 and
    /// that every built-in it needs is provided here.
    pub(crate) fn new(module: Module) -> Result<Self, LoadError> {
        let engine = module.engine().clone();
        let memory_type = module
            .imports()
            .find_map(
                |import| match (import.module(), import.name(), import.ty()) {
                    ("env", "memory", ExternType::Memory(ty)) => Some(ty),
                    _ => None,
                },
            )
            .unwrap_or_else(|| MemoryType::new64(DEFAULT_MEMORY_PAGES, None));
        let linker = linker(&engine).map_err(LoadError::Link)?;
        let mut opa = OpaModule {
            module,
            linker,
            memory_type,
            builtins: Arc::from(Vec::new()),
        };
        let mut store = Store::new(
            &engine,
            OpaState {
                limiter: MemoryLimiter::new(crate::limits::DEFAULT_MEMORY_LIMIT_BYTES),
                builtins: opa.builtins.clone(),
                policy_id: Arc::from("loading"),
                abort_message: None,
                memory: None,
            },
        );
        store.limiter(|state| &mut state.limiter);
        // Loading runs guest code; it must not hang the caller.
        store.set_epoch_deadline(deadline_ticks(crate::limits::DEFAULT_TIMEOUT));
        let inspect = |store: &mut Store<OpaState>| -> wasmtime::Result<(Value, Value)> {
            let instance = opa.instantiate(store)?;
            let abi = Abi::new(store, &instance)?;
            let builtins = abi.call_value_export(store, &instance, "builtins")?;
            let entrypoints = abi.call_value_export(store, &instance, "entrypoints")?;
            Ok((builtins, entrypoints))
        };
        let (needed, entrypoints) = inspect(&mut store).map_err(LoadError::NotOpaModule)?;
        if !entrypoints
            .as_object()
            .is_some_and(|map| map.values().any(|id| id.as_i64() == Some(0)))
        {
            return Err(LoadError::OpaModule(format!(
                "has no entrypoint with id 0 (entrypoints: {entrypoints})"
            )));
        }
        opa.builtins = resolve_builtins(&needed)?.into();
        Ok(opa)
    }

    /// A fresh instance in `store`, with a fresh memory.
    pub(crate) fn instantiate(&self, store: &mut Store<OpaState>) -> wasmtime::Result<Instance> {
        let memory = Memory::new(&mut *store, self.memory_type.clone())?;
        store.data_mut().memory = Some(memory);
        let mut imports = Vec::new();
        for import in self.module.imports() {
            let item = match (import.module(), import.name()) {
                ("env", "memory") => Extern::Memory(memory),
                _ => self
                    .linker
                    .get_by_import(&mut *store, &import)
                    .ok_or_else(|| {
                        wasmtime::Error::msg(format!(
                            "the module imports {}.{}, which the OPA host does not provide",
                            import.module(),
                            import.name()
                        ))
                    })?,
            };
            imports.push(item);
        }
        Instance::new(&mut *store, &self.module, &imports)
    }

    /// A new instance in a store of its own, with `data` loaded: ready for evaluations.
    pub(crate) fn instance(
        &self,
        limits: &EvaluationLimits,
        policy_id: Arc<str>,
        data: &impl Serialize,
    ) -> Result<OpaInstance, EvaluationError> {
        let state = OpaState::new(MemoryLimiter::new(limits.memory_bytes), self, policy_id);
        let mut store = Store::new(self.module.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(limits.timeout.map_or(u64::MAX, deadline_ticks));
        let prepared = (|| -> wasmtime::Result<(Abi, i32, i32, i32)> {
            let instance = self.instantiate(&mut store)?;
            let abi = Abi::new(&mut store, &instance)?;
            let heap_before_data = abi.heap_ptr_get.call(&mut store, ())?;
            let data = abi.load_json(&mut store, data)?;
            let heap_base = abi.heap_ptr_get.call(&mut store, ())?;
            Ok((abi, heap_before_data, data, heap_base))
        })();
        match prepared {
            Ok((abi, heap_before_data, data, heap_base)) => Ok(OpaInstance {
                store,
                abi,
                heap_before_data,
                data,
                heap_base,
            }),
            Err(err) => Err(classify_in(&store, err, limits)),
        }
    }
}

/// An instantiated Rego module with its data document loaded. Each evaluation starts from the
/// heap as it was after loading the data (OPA's own SDK does the same), so nothing of one
/// evaluation is visible to the next.
pub(crate) struct OpaInstance {
    store: Store<OpaState>,
    abi: Abi,
    heap_before_data: i32,
    data: i32,
    heap_base: i32,
}

impl OpaInstance {
    /// Evaluates entrypoint 0 on `input`, with the data loaded at creation or, for policies
    /// whose data changes (context-aware ones), with `data`; returns the result set
    /// (`[{"result": ...}]`, empty when undefined).
    pub(crate) fn evaluate(
        &mut self,
        input: &impl Serialize,
        data: Option<&Value>,
        limits: &EvaluationLimits,
    ) -> Result<Value, EvaluationError> {
        let store = &mut self.store;
        store.set_epoch_deadline(limits.timeout.map_or(u64::MAX, deadline_ticks));
        let abi = &self.abi;
        let outcome = (|| -> wasmtime::Result<Result<Value, i32>> {
            let data = match data {
                Some(data) => {
                    abi.heap_ptr_set.call(&mut *store, self.heap_before_data)?;
                    abi.load_json(store, data)?
                }
                None => {
                    abi.heap_ptr_set.call(&mut *store, self.heap_base)?;
                    self.data
                }
            };
            let input = abi.load_json(store, input)?;
            let context = abi.eval_ctx_new.call(&mut *store, ())?;
            abi.eval_ctx_set_input.call(&mut *store, (context, input))?;
            abi.eval_ctx_set_data.call(&mut *store, (context, data))?;
            abi.eval_ctx_set_entrypoint
                .call(&mut *store, (context, 0))?;
            let code = abi.eval.call(&mut *store, context)?;
            if code != 0 {
                return Ok(Err(code));
            }
            let result = abi.eval_ctx_get_result.call(&mut *store, context)?;
            Ok(Ok(abi.dump_json(store, result)?))
        })();
        match outcome {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(code)) => Err(EvaluationError::Guest(format!(
                "the Rego evaluation failed with OPA error code {code}"
            ))),
            Err(err) => Err(classify_in(store, err, limits)),
        }
    }
}

impl Reusable for OpaInstance {
    fn memory_bytes(&mut self) -> usize {
        self.abi.memory.data_size(&self.store)
    }
}

/// Names the cause of a failure: the policy's abort message, or the limit or trap.
fn classify_in(
    store: &Store<OpaState>,
    err: wasmtime::Error,
    limits: &EvaluationLimits,
) -> EvaluationError {
    match store.data().abort_message() {
        Some(message) => EvaluationError::Guest(format!("aborted: {message}")),
        None => classify(err, store.data().limiter.exceeded, limits),
    }
}

/// The guest's exports the host calls.
struct Abi {
    memory: Memory,
    malloc: TypedFunc<i32, i32>,
    json_parse: TypedFunc<(i32, i32), i32>,
    json_dump: TypedFunc<i32, i32>,
    eval_ctx_new: TypedFunc<(), i32>,
    eval_ctx_set_input: TypedFunc<(i32, i32), ()>,
    eval_ctx_set_data: TypedFunc<(i32, i32), ()>,
    eval_ctx_set_entrypoint: TypedFunc<(i32, i32), ()>,
    eval_ctx_get_result: TypedFunc<i32, i32>,
    eval: TypedFunc<i32, i32>,
    heap_ptr_get: TypedFunc<(), i32>,
    heap_ptr_set: TypedFunc<i32, ()>,
}

impl Abi {
    fn new(store: &mut Store<OpaState>, instance: &Instance) -> wasmtime::Result<Self> {
        let memory = store_memory(store.data())?;
        Ok(Abi {
            memory,
            malloc: instance.get_typed_func(&mut *store, "opa_malloc")?,
            json_parse: instance.get_typed_func(&mut *store, "opa_json_parse")?,
            json_dump: instance.get_typed_func(&mut *store, "opa_json_dump")?,
            eval_ctx_new: instance.get_typed_func(&mut *store, "opa_eval_ctx_new")?,
            eval_ctx_set_input: instance.get_typed_func(&mut *store, "opa_eval_ctx_set_input")?,
            eval_ctx_set_data: instance.get_typed_func(&mut *store, "opa_eval_ctx_set_data")?,
            eval_ctx_set_entrypoint: instance
                .get_typed_func(&mut *store, "opa_eval_ctx_set_entrypoint")?,
            eval_ctx_get_result: instance.get_typed_func(&mut *store, "opa_eval_ctx_get_result")?,
            eval: instance.get_typed_func(&mut *store, "eval")?,
            heap_ptr_get: instance.get_typed_func(&mut *store, "opa_heap_ptr_get")?,
            heap_ptr_set: instance.get_typed_func(&mut *store, "opa_heap_ptr_set")?,
        })
    }

    /// Copies `value` into the guest and parses it there; returns the guest value's address.
    fn load_json(
        &self,
        store: &mut Store<OpaState>,
        value: &impl Serialize,
    ) -> wasmtime::Result<i32> {
        let text = serde_json::to_vec(value)?;
        load_json_bytes(
            store,
            self.memory,
            &self.malloc,
            &self.json_parse,
            text.as_slice(),
        )
    }

    fn dump_json(&self, store: &mut Store<OpaState>, value: i32) -> wasmtime::Result<Value> {
        let text = self.json_dump.call(&mut *store, value)?;
        let text = read_c_string(&self.memory, &*store, text)?;
        Ok(serde_json::from_slice(&text)?)
    }

    /// Calls a `() -> value` export such as `builtins` and reads the value as JSON.
    fn call_value_export(
        &self,
        store: &mut Store<OpaState>,
        instance: &Instance,
        name: &str,
    ) -> wasmtime::Result<Value> {
        let export: TypedFunc<(), i32> = instance.get_typed_func(&mut *store, name)?;
        let value = export.call(&mut *store, ())?;
        self.dump_json(store, value)
    }
}

fn store_memory(state: &OpaState) -> wasmtime::Result<Memory> {
    state
        .memory
        .ok_or_else(|| wasmtime::Error::msg("no instance memory: the module was not instantiated"))
}

fn load_json_bytes(
    mut store: impl AsContextMut<Data = OpaState>,
    memory: Memory,
    malloc: &TypedFunc<i32, i32>,
    json_parse: &TypedFunc<(i32, i32), i32>,
    text: &[u8],
) -> wasmtime::Result<i32> {
    let len = i32::try_from(text.len())
        .map_err(|_| wasmtime::Error::msg(format!("{} bytes is too large", text.len())))?;
    let address = malloc.call(&mut store, len)?;
    memory.write(&mut store, to_offset(address), text)?;
    let value = json_parse.call(&mut store, (address, len))?;
    if value == 0 {
        return Err(wasmtime::Error::msg(
            "the module could not parse a JSON document",
        ));
    }
    Ok(value)
}

fn to_offset(value: i32) -> usize {
    // 32-bit guest addresses travel as i32; reinterpret, never sign-extend.
    value as u32 as usize
}

/// Reads the NUL-terminated string at `address`.
fn read_c_string(
    memory: &Memory,
    store: impl wasmtime::AsContext,
    address: i32,
) -> wasmtime::Result<Vec<u8>> {
    let data = memory.data(&store);
    let start = to_offset(address);
    let tail = data.get(start..).ok_or_else(|| {
        wasmtime::Error::msg(format!(
            "the module returned an address ({start}) outside its memory"
        ))
    })?;
    let end = tail
        .iter()
        .position(|&byte| byte == 0)
        .ok_or_else(|| wasmtime::Error::msg("the module returned an unterminated string"))?;
    Ok(tail[..end].to_vec())
}

/// Matches the built-ins a module needs (`{"name": id}`) with the host's.
fn resolve_builtins(needed: &Value) -> Result<Vec<Option<Builtin>>, LoadError> {
    let needed = needed
        .as_object()
        .ok_or_else(|| LoadError::OpaModule(format!("lists its built-ins as {needed}")))?;
    let mut table: Vec<Option<Builtin>> = Vec::new();
    let mut missing = Vec::new();
    for (name, id) in needed {
        let id = id
            .as_u64()
            .and_then(|id| usize::try_from(id).ok())
            .filter(|id| *id < 4096)
            .ok_or_else(|| LoadError::OpaModule(format!("gives built-in {name} the id {id}")))?;
        match builtins::lookup(name) {
            Some(builtin) => {
                if table.len() <= id {
                    table.resize(id + 1, None);
                }
                table[id] = Some(builtin);
            }
            None => missing.push(name.clone()),
        }
    }
    if missing.is_empty() {
        Ok(table)
    } else {
        Err(LoadError::UnsupportedBuiltins(missing))
    }
}

/// The imports every OPA module may use besides its memory.
fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<OpaState>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(
        "env",
        "opa_abort",
        |mut caller: Caller<'_, OpaState>, address: i32| -> wasmtime::Result<()> {
            let message = guest_c_string(&mut caller, address)?;
            caller.data_mut().abort_message = Some(message.clone());
            Err(wasmtime::Error::msg(format!(
                "the policy aborted: {message}"
            )))
        },
    )?;
    linker.func_wrap(
        "env",
        "opa_println",
        |mut caller: Caller<'_, OpaState>, address: i32| -> wasmtime::Result<()> {
            let line = guest_c_string(&mut caller, address)?;
            let policy = caller.data().policy_id.clone();
            tracing::info!(policy = %policy, "{line}");
            Ok(())
        },
    )?;
    linker.func_wrap(
        "env",
        "opa_builtin0",
        |mut caller: Caller<'_, OpaState>, id: i32, _ctx: i32| call_builtin(&mut caller, id, &[]),
    )?;
    linker.func_wrap(
        "env",
        "opa_builtin1",
        |mut caller: Caller<'_, OpaState>, id: i32, _ctx: i32, a: i32| {
            call_builtin(&mut caller, id, &[a])
        },
    )?;
    linker.func_wrap(
        "env",
        "opa_builtin2",
        |mut caller: Caller<'_, OpaState>, id: i32, _ctx: i32, a: i32, b: i32| {
            call_builtin(&mut caller, id, &[a, b])
        },
    )?;
    linker.func_wrap(
        "env",
        "opa_builtin3",
        |mut caller: Caller<'_, OpaState>, id: i32, _ctx: i32, a: i32, b: i32, c: i32| {
            call_builtin(&mut caller, id, &[a, b, c])
        },
    )?;
    linker.func_wrap(
        "env",
        "opa_builtin4",
        |mut caller: Caller<'_, OpaState>, id: i32, _ctx: i32, a: i32, b: i32, c: i32, d: i32| {
            call_builtin(&mut caller, id, &[a, b, c, d])
        },
    )?;
    Ok(linker)
}

fn guest_c_string(caller: &mut Caller<'_, OpaState>, address: i32) -> wasmtime::Result<String> {
    let memory = store_memory(caller.data())?;
    let bytes = read_c_string(&memory, &*caller, address)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn guest_func<Params, Results>(
    caller: &mut Caller<'_, OpaState>,
    name: &str,
) -> wasmtime::Result<TypedFunc<Params, Results>>
where
    Params: wasmtime::WasmParams,
    Results: wasmtime::WasmResults,
{
    caller
        .get_export(name)
        .and_then(Extern::into_func)
        .ok_or_else(|| wasmtime::Error::msg(format!("the policy does not export {name}")))?
        .typed(&*caller)
}

/// Runs built-in `id` on the guest values at `args`; returns the address of the result, or 0
/// (undefined) when the built-in fails.
fn call_builtin(caller: &mut Caller<'_, OpaState>, id: i32, args: &[i32]) -> wasmtime::Result<i32> {
    let builtin = usize::try_from(id)
        .ok()
        .and_then(|id| caller.data().builtins.get(id).copied().flatten())
        .ok_or_else(|| wasmtime::Error::msg(format!("the policy called unknown built-in {id}")))?;
    let memory = store_memory(caller.data())?;
    let json_dump = guest_func::<i32, i32>(caller, "opa_json_dump")?;
    let mut values = Vec::with_capacity(args.len());
    for &address in args {
        let text = json_dump.call(&mut *caller, address)?;
        let text = read_c_string(&memory, &*caller, text)?;
        values.push(serde_json::from_slice::<Value>(&text)?);
    }
    let policy = caller.data().policy_id.clone();
    match (builtin.run)(&builtins::Context { policy: &policy }, &values) {
        Ok(result) => {
            let malloc = guest_func::<i32, i32>(caller, "opa_malloc")?;
            let json_parse = guest_func::<(i32, i32), i32>(caller, "opa_json_parse")?;
            let text = serde_json::to_vec(&result)?;
            load_json_bytes(&mut *caller, memory, &malloc, &json_parse, &text)
        }
        Err(error) => {
            tracing::debug!(policy = %policy, builtin = builtin.name, %error, "built-in failed; its expression is undefined");
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn builtins_are_resolved_by_id_and_missing_ones_named() {
        let table = resolve_builtins(&json!({"sprintf": 2, "time.now_ns": 0})).expect("provided");
        assert_eq!(table.len(), 3);
        assert_eq!(table[2].map(|builtin| builtin.name), Some("sprintf"));
        assert!(table[1].is_none());

        let err = resolve_builtins(&json!({"sprintf": 0, "io.jwt.decode": 1, "http.send": 2}))
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "the Rego policy needs built-in functions this policy-server does not provide: http.send, io.jwt.decode"
        );
        assert!(resolve_builtins(&json!({"sprintf": -1})).is_err());
        assert!(resolve_builtins(&json!(["sprintf"])).is_err());
    }
}
