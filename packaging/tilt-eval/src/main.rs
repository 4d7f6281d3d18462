//! `tilt-eval FILE-NAME < Tiltfile`: evaluate a Tiltfile with the real
//! Starlark interpreter (the `starlark` crate) and Tilt's built-ins stubbed;
//! print every call of a built-in, in order, as JSON
//! (`[{"name", "args", "kwargs"}]`); on an error, print the interpreter's
//! message and exit 1. Used by `packaging/tests/tilt.rs`.
//!
//! A tool of its own, outside relab's workspace: `starlark` turns on
//! serde_json's `arbitrary_precision`, which cargo would unify into every
//! crate of the workspace, changing how they all serialise numbers.

use serde_json::{json, Value as Json};
use starlark::environment::{GlobalsBuilder, Module};
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::syntax::{AstModule, Dialect};
use starlark::values::dict::DictRef;
use starlark::values::list::ListRef;
use starlark::values::tuple::{TupleRef, UnpackTuple};
use starlark::values::Value;
use std::io::Read;

/// A recorded call's stand-in value: what a stubbed built-in returns, so that
/// a call passed to another (`k8s_yaml(helm(...))`) is found again.
const CALL_TOKEN: &str = "\u{1}tilt-call#";

thread_local! {
    /// The calls of the Tiltfile being evaluated, in order.
    static CALLS: std::cell::RefCell<Vec<Json>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A Starlark value as JSON: strings, lists (and tuples), a recorded call
/// as `{"call": ...}`, anything else as `{"word": "<its repr>"}` (`True`, `2.5`).
fn to_json(v: Value) -> Json {
    if let Some(s) = v.unpack_str() {
        return match s.strip_prefix(CALL_TOKEN).and_then(|i| i.parse::<usize>().ok()) {
            Some(i) => json!({ "call": CALLS.with(|c| c.borrow()[i].clone()) }),
            None => Json::String(s.to_string()),
        };
    }
    if let Some(b) = v.unpack_bool() {
        return json!({ "word": if b { "True" } else { "False" } });
    }
    if let Some(list) = ListRef::from_value(v) {
        return Json::Array(list.iter().map(to_json).collect());
    }
    if let Some(tuple) = TupleRef::from_value(v) {
        return Json::Array(tuple.iter().map(to_json).collect());
    }
    json!({ "word": v.to_string() })
}

/// Record a call of a stubbed built-in; its stand-in value.
fn record<'v>(name: &str, args: Vec<Value<'v>>, kwargs: Option<DictRef<'v>>) -> String {
    let kwargs: serde_json::Map<String, Json> = kwargs
        .map(|d| {
            d.iter()
                .map(|(k, v)| (k.unpack_str().unwrap_or_default().to_string(), to_json(v)))
                .collect()
        })
        .unwrap_or_default();
    let call = json!({
        "name": name,
        "args": args.into_iter().map(to_json).collect::<Vec<_>>(),
        "kwargs": kwargs,
    });
    CALLS.with(|c| {
        let mut c = c.borrow_mut();
        c.push(call);
        format!("{CALL_TOKEN}{}", c.len() - 1)
    })
}

/// The Tilt built-ins the Tiltfile uses, recording their arguments; those
/// with required parameters declare them, so a call without one fails the
/// evaluation as Tilt would.
#[starlark_module]
fn tilt_builtins(builder: &mut GlobalsBuilder) {
    fn docker_build<'v>(
        #[starlark(require = pos)] r#ref: Value<'v>,
        #[starlark(require = pos)] context: Value<'v>,
        #[starlark(kwargs)] kwargs: DictRef<'v>,
    ) -> anyhow::Result<String> {
        Ok(record("docker_build", vec![r#ref, context], Some(kwargs)))
    }
    fn helm<'v>(
        #[starlark(require = pos)] paths: Value<'v>,
        #[starlark(kwargs)] kwargs: DictRef<'v>,
    ) -> anyhow::Result<String> {
        Ok(record("helm", vec![paths], Some(kwargs)))
    }
    fn k8s_yaml<'v>(
        #[starlark(require = pos)] yaml: Value<'v>,
        #[starlark(kwargs)] kwargs: DictRef<'v>,
    ) -> anyhow::Result<String> {
        Ok(record("k8s_yaml", vec![yaml], Some(kwargs)))
    }
    fn blob<'v>(#[starlark(require = pos)] contents: Value<'v>) -> anyhow::Result<String> {
        Ok(record("blob", vec![contents], None))
    }
    fn k8s_resource<'v>(
        #[starlark(require = pos)] workload: Value<'v>,
        #[starlark(kwargs)] kwargs: DictRef<'v>,
    ) -> anyhow::Result<String> {
        Ok(record("k8s_resource", vec![workload], Some(kwargs)))
    }
    fn local_resource<'v>(
        #[starlark(require = pos)] name: Value<'v>,
        #[starlark(kwargs)] kwargs: DictRef<'v>,
    ) -> anyhow::Result<String> {
        Ok(record("local_resource", vec![name], Some(kwargs)))
    }
    fn port_forward<'v>(
        #[starlark(require = pos)] local_port: Value<'v>,
        #[starlark(args)] args: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] kwargs: DictRef<'v>,
    ) -> anyhow::Result<String> {
        let mut all = vec![local_port];
        all.extend(args.items);
        Ok(record("port_forward", all, Some(kwargs)))
    }
    fn link<'v>(
        #[starlark(require = pos)] url: Value<'v>,
        #[starlark(args)] args: UnpackTuple<Value<'v>>,
    ) -> anyhow::Result<String> {
        let mut all = vec![url];
        all.extend(args.items);
        Ok(record("link", all, None))
    }
    fn update_settings<'v>(#[starlark(kwargs)] kwargs: DictRef<'v>) -> anyhow::Result<String> {
        Ok(record("update_settings", Vec::new(), Some(kwargs)))
    }
}

/// Evaluate a Tiltfile with the stubbed built-ins; every call, in order
/// (calls passed as arguments appear inside their callers too). An error
/// is the interpreter's message.
fn evaluate(name: &str, text: &str) -> Result<Vec<Json>, String> {
    let ast = AstModule::parse(name, text.to_owned(), &Dialect::Extended).map_err(|e| e.to_string())?;
    let globals = GlobalsBuilder::standard().with(tilt_builtins).build();
    Module::with_temp_heap(|module| {
        let mut eval = Evaluator::new(&module);
        eval.eval_module(ast, &globals).map(|_| ()).map_err(|e| e.to_string())
    })?;
    Ok(CALLS.with(|c| c.borrow().clone()))
}

fn main() -> std::process::ExitCode {
    let name = std::env::args().nth(1).unwrap_or_else(|| "Tiltfile".into());
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("tilt-eval: reading the Tiltfile: {e}");
        return std::process::ExitCode::from(2);
    }
    match evaluate(&name, &text) {
        Ok(calls) => {
            println!("{}", Json::Array(calls));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
