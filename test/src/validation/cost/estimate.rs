//! The worst-case cost of one CEL expression, estimated statically the way kube-apiserver does
//! when a CRD is written: cel-go's checker cost model (`checker/cost.go`), the Kubernetes library
//! cost estimator consulted first for its functions, `has()` costing nothing, and sizes of schema
//! values read from the rule's declared type (see [`super::decl`]).
//!
//! The estimator walks the parsed expression once, inferring the type of every sub-expression (the
//! cost of `size`, `+`, `<`, `in` or `[]` depends on whether the operand is a string, a list or a
//! map) and tracking, as cel-go does, a *path* from `self` through fields, `@items`, `@keys` and
//! `@values` that finds the largest size of a value in the schema. Anything it does not model —
//! a function, an identifier, a macro form — is returned as [`Unsupported`] rather than guessed.

use std::{collections::HashMap, fmt, rc::Rc};

use cel::common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, operators};

use super::decl::{DeclKind, DeclType};

/// Cost of traversing one character or byte of a string (cel-go `StringTraversalCostFactor`).
const STRING_TRAVERSAL_COST_FACTOR: f64 = 0.1;
/// Cost of one character of a regular expression (cel-go `RegexStringLengthCostFactor`).
const REGEX_STRING_LENGTH_COST_FACTOR: f64 = 0.25;
/// Cost of reading a variable or selecting a field.
const SELECT_AND_IDENT_COST: u64 = 1;
/// Cost of a literal.
const CONST_COST: u64 = 0;
/// Base cost of building a list literal.
const LIST_CREATE_BASE_COST: u64 = 10;
/// Base cost of building a map literal.
const MAP_CREATE_BASE_COST: u64 = 30;

/// Why a rule's cost cannot be estimated by the test world: what in the rule it does not model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the test world cannot estimate the cost of {}", self.0)
    }
}

impl std::error::Error for Unsupported {}

fn unsupported<T>(what: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(what.into()))
}

/// A range of sizes or costs; both ends saturate at `u64::MAX` instead of overflowing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// Smallest value.
    pub min: u64,
    /// Largest value.
    pub max: u64,
}

impl Range {
    const UNKNOWN: Range = Range {
        min: 0,
        max: u64::MAX,
    };

    const fn fixed(n: u64) -> Self {
        Range { min: n, max: n }
    }

    fn add(self, other: Range) -> Self {
        Range {
            min: self.min.saturating_add(other.min),
            max: self.max.saturating_add(other.max),
        }
    }

    fn mul(self, other: Range) -> Self {
        Range {
            min: self.min.saturating_mul(other.min),
            max: self.max.saturating_mul(other.max),
        }
    }

    fn factor(self, factor: f64) -> Self {
        Range {
            min: mul_factor(self.min, factor),
            max: mul_factor(self.max, factor),
        }
    }

    fn union(self, other: Range) -> Self {
        Range {
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        }
    }
}

/// `x * factor` rounded up, saturating like cel-go's `multiplyByCostFactor`.
fn mul_factor(x: u64, factor: f64) -> u64 {
    let xf = x as f64;
    let limit = u64::MAX as f64;
    if xf > 0.0 && factor > 0.0 && xf > limit / factor {
        return u64::MAX;
    }
    let ceil = (xf * factor).ceil();
    if ceil >= limit { u64::MAX } else { ceil as u64 }
}

/// The CEL type of a sub-expression, as far as the cost model needs it.
#[derive(Clone, Debug)]
enum Ty {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    Duration,
    Timestamp,
    /// Known only at run time (`x-kubernetes-int-or-string`, `dyn(...)`, empty literals).
    Dyn,
    /// A type value (`int`, `string`, `type(x)`).
    Type,
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    /// An object of the schema, with its declared fields.
    Object(Rc<DeclType>),
}

impl Ty {
    fn of(decl: &Rc<DeclType>) -> Ty {
        match &decl.kind {
            DeclKind::Bool => Ty::Bool,
            DeclKind::Int => Ty::Int,
            DeclKind::Double => Ty::Double,
            DeclKind::String => Ty::String,
            DeclKind::Bytes => Ty::Bytes,
            DeclKind::Duration => Ty::Duration,
            DeclKind::Timestamp => Ty::Timestamp,
            DeclKind::Dyn => Ty::Dyn,
            DeclKind::List(elem) => Ty::List(Box::new(Ty::of(elem))),
            DeclKind::Map(key, value) => Ty::Map(Box::new(Ty::of(key)), Box::new(Ty::of(value))),
            DeclKind::Object(_) => Ty::Object(decl.clone()),
        }
    }

    /// Types whose size is fixed (cel-go `isScalar`): strings and bytes are not.
    fn is_scalar(&self) -> bool {
        matches!(
            self,
            Ty::Bool | Ty::Double | Ty::Duration | Ty::Int | Ty::Timestamp | Ty::Uint
        )
    }

    fn is_dyn(&self) -> bool {
        matches!(self, Ty::Dyn)
    }

    fn name(&self) -> &'static str {
        match self {
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::Uint => "uint",
            Ty::Double => "double",
            Ty::String => "string",
            Ty::Bytes => "bytes",
            Ty::Null => "null",
            Ty::Duration => "duration",
            Ty::Timestamp => "timestamp",
            Ty::Dyn => "dyn",
            Ty::Type => "type",
            Ty::List(_) => "list",
            Ty::Map(..) => "map",
            Ty::Object(_) => "object",
        }
    }
}

/// Identifiers that name a type (`type(x) == string`).
const TYPE_NAMES: [&str; 10] = [
    "bool",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// The overloads whose cost differs; every other function costs 1 plus its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Overload {
    LogicalAndOr,
    Conditional,
    /// `==`, `!=` and ordering of strings or bytes: the shorter operand is traversed.
    CompareSized,
    /// Ordering where an operand is `dyn`: every overload may apply, the dearest counts.
    CompareDyn,
    AddString,
    AddList,
    IndexList,
    IndexMap,
    InList,
    /// `s.matches(re)` (the global form `matches(s, re)` costs 1 like any function).
    MatchesMember,
    Contains,
    StartsOrEndsWith,
    StringToBytes,
    BytesToString,
    /// Kubernetes library: `lowerAscii`, `upperAscii`, `trim`, `substring` traverse the target.
    LibTraverse,
    LibReplace,
    LibSplit,
    LibJoin,
    LibFind,
    /// Kubernetes library: `isSorted`, `sum`, `min`, `max`, `indexOf`, `lastIndexOf`.
    LibScan,
    /// Every function without a cost model of its own.
    Constant,
}

/// How a container's entries are sized, known for literals and what is built from them.
#[derive(Clone, Copy, Debug)]
struct EntrySize {
    list: bool,
    key: Range,
    value: Range,
}

fn union_entries(a: Option<EntrySize>, b: Option<EntrySize>) -> Option<EntrySize> {
    let (a, b) = (a?, b?);
    Some(EntrySize {
        list: a.list,
        key: a.key.union(b.key),
        value: a.value.union(b.value),
    })
}

/// A comprehension variable (iteration or accumulator) in scope.
#[derive(Clone, Debug)]
struct Local {
    path: Vec<String>,
    size: Option<Range>,
    entry: Option<EntrySize>,
    ty: Ty,
}

/// The estimated cost of `rule` evaluated on a value of type `root` (`self`, and `oldSelf` for
/// transition rules): the largest number of cost units one evaluation can use.
pub fn rule_cost(rule: &str, root: &Rc<DeclType>) -> Result<u64, Unsupported> {
    let expr = cel::parser::Parser::new()
        .parse(rule)
        .map_err(|e| Unsupported(format!("a rule that does not parse ({e})")))?;
    let mut coster = Coster::new(root);
    Ok(coster.cost(&expr)?.max)
}

struct Coster<'a> {
    root: &'a Rc<DeclType>,
    paths: HashMap<u64, Vec<String>>,
    locals: HashMap<String, Vec<Local>>,
    sizes: HashMap<u64, Range>,
    entries: HashMap<u64, EntrySize>,
    types: HashMap<u64, Ty>,
}

impl<'a> Coster<'a> {
    fn new(root: &'a Rc<DeclType>) -> Self {
        Self {
            root,
            paths: HashMap::new(),
            locals: HashMap::new(),
            sizes: HashMap::new(),
            entries: HashMap::new(),
            types: HashMap::new(),
        }
    }

    fn cost(&mut self, e: &IdedExpr) -> Result<Range, Unsupported> {
        let (cost, ty) = match &e.expr {
            Expr::Literal(literal) => (Range::fixed(CONST_COST), literal_type(literal)),
            Expr::Ident(name) => (Range::fixed(SELECT_AND_IDENT_COST), self.ident(e.id, name)?),
            Expr::Select(select) => {
                let operand_cost = self.cost(&select.operand)?;
                let operand = self.ty(&select.operand);
                let field_ty = match &operand {
                    Ty::Object(decl) => match &decl.kind {
                        DeclKind::Object(fields) => match fields.get(&select.field) {
                            Some(field) => Ty::of(field),
                            None => return unsupported(format!("the undefined field `{}`", select.field)),
                        },
                        _ => Ty::Dyn,
                    },
                    Ty::Map(_, value) => (**value).clone(),
                    Ty::Dyn => Ty::Dyn,
                    other => {
                        return unsupported(format!("selecting `{}` on a {}", select.field, other.name()));
                    }
                };
                if select.test {
                    // has(): Kubernetes charges nothing for the presence test itself.
                    (operand_cost, Ty::Bool)
                } else {
                    let mut cost = operand_cost;
                    if matches!(operand, Ty::Map(..) | Ty::Object(_)) {
                        cost = cost.add(Range::fixed(SELECT_AND_IDENT_COST));
                    }
                    let mut path = self.path(&select.operand);
                    path.push(select.field.clone());
                    self.paths.insert(e.id, path);
                    (cost, field_ty)
                }
            }
            Expr::Call(call) => return self.call(e, call),
            Expr::List(list) => {
                if !list.optional_indices.is_empty() {
                    return unsupported("optional list elements");
                }
                let mut sum = Range::fixed(0);
                let mut item = Range {
                    min: u64::MAX,
                    max: 0,
                };
                if list.elements.is_empty() {
                    item.min = 0;
                }
                for element in &list.elements {
                    sum = sum.add(self.cost(element)?);
                    item = item.union(self.size_or_unknown(element));
                }
                self.entries.insert(
                    e.id,
                    EntrySize {
                        list: true,
                        key: Range::fixed(1),
                        value: item,
                    },
                );
                let elem = list.elements.first().map_or(Ty::Dyn, |first| self.ty(first));
                (
                    sum.add(Range::fixed(LIST_CREATE_BASE_COST)),
                    Ty::List(Box::new(elem)),
                )
            }
            Expr::Map(map) => {
                let mut sum = Range::fixed(0);
                let mut key = Range {
                    min: u64::MAX,
                    max: 0,
                };
                let mut value = Range {
                    min: u64::MAX,
                    max: 0,
                };
                if map.entries.is_empty() {
                    key.min = 0;
                    value.min = 0;
                }
                let mut types = None;
                for entry in &map.entries {
                    let EntryExpr::MapEntry(entry) = &entry.expr else {
                        return unsupported("a struct field in a map literal");
                    };
                    if entry.optional {
                        return unsupported("optional map entries");
                    }
                    sum = sum.add(self.cost(&entry.key)?).add(self.cost(&entry.value)?);
                    key = key.union(self.size_or_unknown(&entry.key));
                    value = value.union(self.size_or_unknown(&entry.value));
                    types.get_or_insert_with(|| (self.ty(&entry.key), self.ty(&entry.value)));
                }
                self.entries.insert(
                    e.id,
                    EntrySize {
                        list: false,
                        key,
                        value,
                    },
                );
                let (k, v) = types.unwrap_or((Ty::Dyn, Ty::Dyn));
                (
                    sum.add(Range::fixed(MAP_CREATE_BASE_COST)),
                    Ty::Map(Box::new(k), Box::new(v)),
                )
            }
            Expr::Comprehension(comprehension) => return self.comprehension(e, comprehension),
            Expr::Struct(_) => return unsupported("a message literal"),
            Expr::Unspecified => return unsupported("an empty expression"),
        };
        self.types.insert(e.id, ty);
        Ok(cost)
    }

    fn ident(&mut self, id: u64, name: &str) -> Result<Ty, Unsupported> {
        if let Some(local) = self.local(name) {
            let (path, ty) = (local.path.clone(), local.ty.clone());
            self.paths.insert(id, path);
            return Ok(ty);
        }
        self.paths.insert(id, vec![name.to_owned()]);
        match name {
            "self" | "oldSelf" => Ok(Ty::of(self.root)),
            _ if TYPE_NAMES.contains(&name) => Ok(Ty::Type),
            _ => unsupported(format!("the identifier `{name}`")),
        }
    }

    fn comprehension(&mut self, e: &IdedExpr, c: &ComprehensionExpr) -> Result<Range, Unsupported> {
        if c.iter_var2.is_some() {
            return unsupported("a two-variable comprehension");
        }
        let mut sum = self.cost(&c.iter_range)?.add(self.cost(&c.accu_init)?);
        let accu = Local {
            path: self.path(&c.accu_init),
            size: self.compute_size(&c.accu_init),
            entry: self.compute_entry(&c.accu_init),
            ty: self.ty(&c.accu_init),
        };
        self.push(&c.accu_var, accu);
        let iter = self.iter_var(&c.iter_range)?;
        self.push(&c.iter_var, iter);
        let loop_cost = self.cost(&c.loop_cond)?;
        let step_cost = self.cost(&c.loop_step)?;
        self.pop(&c.iter_var);
        sum = sum.add(self.cost(&c.result)?);
        self.pop(&c.accu_var);

        let range_count = self.size_or_unknown(&c.iter_range);
        sum = sum.add(range_count.mul(step_cost.add(loop_cost)));
        match &c.accu_init.expr {
            Expr::Literal(_) => {
                if let Some(size) = self.compute_size(&c.accu_init) {
                    self.sizes.insert(e.id, size);
                }
            }
            Expr::List(_) | Expr::Map(_) => {
                self.sizes.insert(e.id, range_count);
                if let Some(entry) = self.compute_entry(&c.loop_step) {
                    self.entries.insert(e.id, entry);
                }
            }
            _ => {}
        }
        // `map` and `filter` accumulate into `[]`: the step says what the list holds.
        let ty = match (self.ty(&c.result), self.ty(&c.loop_step)) {
            (Ty::List(elem), step @ Ty::List(_)) if elem.is_dyn() => step,
            (ty, _) => ty,
        };
        self.types.insert(e.id, ty);
        Ok(sum)
    }

    /// The iteration variable over `range`: list items, or map keys.
    fn iter_var(&mut self, range: &IdedExpr) -> Result<Local, Unsupported> {
        let entry = self.compute_entry(range);
        let range_ty = self.ty(range);
        let list = entry.map_or(matches!(range_ty, Ty::List(_)), |e| e.list);
        let (size, sub) = if list {
            (entry.map(|e| e.value), "@items")
        } else {
            (entry.map(|e| e.key), "@keys")
        };
        let ty = match range_ty {
            Ty::List(elem) => *elem,
            Ty::Map(key, _) => *key,
            Ty::Dyn => Ty::Dyn,
            other => return unsupported(format!("a comprehension over a {}", other.name())),
        };
        let mut path = self.path(range);
        path.push(sub.to_owned());
        Ok(Local {
            path,
            size,
            entry: None,
            ty,
        })
    }

    fn call(&mut self, e: &IdedExpr, call: &CallExpr) -> Result<Range, Unsupported> {
        if call.func_name == "dyn" && call.target.is_none() && call.args.len() == 1 {
            let arg = &call.args[0];
            let cost = self.cost(arg)?;
            if let Some(size) = self.compute_size(arg) {
                self.sizes.insert(e.id, size);
            }
            if let Some(entry) = self.compute_entry(arg) {
                self.entries.insert(e.id, entry);
            }
            self.types.insert(e.id, Ty::Dyn);
            return Ok(Range::fixed(1).add(cost));
        }
        let mut arg_costs = Vec::with_capacity(call.args.len());
        for arg in &call.args {
            arg_costs.push(self.cost(arg)?);
        }
        let mut sum = Range::fixed(0);
        if let Some(target) = &call.target {
            sum = sum.add(self.cost(target)?);
        }
        let target = call.target.as_deref();
        let arg_types: Vec<Ty> = call.args.iter().map(|a| self.ty(a)).collect();
        let target_type = target.map(|t| self.ty(t));
        let (overload, ty) = resolve(&call.func_name, target_type.as_ref(), &arg_types)?;
        self.types.insert(e.id, ty);

        let (fn_cost, mut result_size) = self.function_cost(e, overload, target, &call.args, &arg_costs);
        match overload {
            Overload::IndexList | Overload::IndexMap => {
                result_size = self.compute_entry(&call.args[0]).map(|entry| entry.value);
                let mut path = self.path(&call.args[0]);
                path.push(
                    if overload == Overload::IndexList {
                        "@items"
                    } else {
                        "@values"
                    }
                    .to_owned(),
                );
                self.paths.insert(e.id, path);
            }
            _ => {}
        }
        if result_size.is_none() {
            result_size = self.compute_size(e);
        }
        if let Some(size) = result_size {
            self.sizes.insert(e.id, size);
        }
        Ok(sum.add(fn_cost))
    }

    /// The cost of the call itself plus its arguments (not its target), and its result size when
    /// the cost model knows it.
    fn function_cost(
        &mut self,
        e: &IdedExpr,
        overload: Overload,
        target: Option<&IdedExpr>,
        args: &[IdedExpr],
        arg_costs: &[Range],
    ) -> (Range, Option<Range>) {
        let arg_sum = arg_costs.iter().fold(Range::fixed(0), |sum, c| sum.add(*c));
        let traverse = |size: Range| size.factor(STRING_TRAVERSAL_COST_FACTOR);
        match overload {
            Overload::LogicalAndOr => {
                let (lhs, rhs) = (arg_costs[0], arg_costs[1]);
                (
                    Range {
                        min: lhs.min,
                        max: lhs.add(rhs).max,
                    },
                    None,
                )
            }
            Overload::Conditional => {
                let size = self
                    .size_or_unknown(&args[1])
                    .union(self.size_or_unknown(&args[2]));
                let entry = union_entries(self.compute_entry(&args[1]), self.compute_entry(&args[2]));
                if let Some(entry) = entry {
                    self.entries.insert(e.id, entry);
                }
                (arg_costs[0].add(arg_costs[1].union(arg_costs[2])), Some(size))
            }
            Overload::CompareSized | Overload::CompareDyn => {
                let lhs = self.size_or_unknown(&args[0]);
                let rhs = self.size_or_unknown(&args[1]);
                let smallest_max = lhs.max.min(rhs.max);
                let min = u64::from(smallest_max > 0);
                let sized = traverse(Range {
                    min,
                    max: smallest_max,
                });
                let cost = if overload == Overload::CompareDyn {
                    sized.union(Range::fixed(1))
                } else {
                    sized
                };
                (cost.add(arg_sum), None)
            }
            Overload::AddString | Overload::AddList => {
                let size = self.size_or_unknown(&args[0]).add(self.size_or_unknown(&args[1]));
                let entry = union_entries(self.compute_entry(&args[0]), self.compute_entry(&args[1]));
                if let Some(entry) = entry {
                    self.entries.insert(e.id, entry);
                }
                let own = if overload == Overload::AddList {
                    Range::fixed(1)
                } else {
                    traverse(size)
                };
                (own.add(arg_sum), Some(size))
            }
            Overload::InList => (self.size_or_unknown(&args[1]).factor(1.0).add(arg_sum), None),
            Overload::MatchesMember => {
                let text = self.size_or_unknown_opt(target).add(Range::fixed(1));
                let regex = self
                    .size_or_unknown(&args[0])
                    .factor(REGEX_STRING_LENGTH_COST_FACTOR);
                (traverse(text).mul(regex).add(arg_sum), None)
            }
            Overload::Contains => {
                let text = traverse(self.size_or_unknown_opt(target));
                let sub = traverse(self.size_or_unknown(&args[0]));
                (text.mul(sub).add(arg_sum), None)
            }
            Overload::StartsOrEndsWith => (traverse(self.size_or_unknown(&args[0])).add(arg_sum), None),
            Overload::StringToBytes => {
                let size = self.size_or_unknown(&args[0]);
                let result = Range {
                    min: size.min,
                    max: size.max.saturating_mul(4),
                };
                (traverse(size).add(arg_sum), Some(result))
            }
            Overload::BytesToString => {
                let size = self.size_or_unknown(&args[0]);
                (
                    traverse(size).add(arg_sum),
                    Some(Range {
                        min: size.min / 4,
                        max: size.max,
                    }),
                )
            }
            Overload::LibTraverse => {
                let size = self.size_or_unknown_opt(target);
                (traverse(size).add(arg_sum), Some(size))
            }
            Overload::LibReplace => {
                let size = self.size_or_unknown_opt(target);
                let result = replace_size(
                    size,
                    self.size_or_unknown(&args[0]),
                    self.size_or_unknown(&args[1]),
                );
                (
                    size.factor(2.0 * STRING_TRAVERSAL_COST_FACTOR).add(arg_sum),
                    Some(result),
                )
            }
            Overload::LibSplit => {
                let size = self.size_or_unknown_opt(target);
                let mut max = size.max;
                if let Some(IdedExpr {
                    expr: Expr::Literal(limit),
                    ..
                }) = args.get(1)
                {
                    max = literal_as_uint(limit).unwrap_or(max);
                }
                (
                    size.factor(2.0 * STRING_TRAVERSAL_COST_FACTOR).add(arg_sum),
                    Some(Range { min: 0, max }),
                )
            }
            Overload::LibJoin => {
                let list = self.size_or_unknown_opt(target);
                let element = self.element_size(target);
                let mut size = list.mul(element);
                if let Some(separator) = args.first() {
                    let separators = Range {
                        min: list.min.saturating_sub(1),
                        max: list.max.saturating_sub(1),
                    };
                    size = size.add(self.size_or_unknown(separator).mul(separators));
                }
                (traverse(size).add(arg_sum), Some(size))
            }
            Overload::LibFind => {
                let size = self.size_or_unknown_opt(target);
                let text = traverse(size.add(Range::fixed(1)));
                let regex = self
                    .size_or_unknown(&args[0])
                    .factor(REGEX_STRING_LENGTH_COST_FACTOR);
                (
                    text.mul(regex).add(arg_sum),
                    Some(Range {
                        min: 0,
                        max: size.max,
                    }),
                )
            }
            Overload::LibScan => {
                let size = self.size_or_unknown_opt(target);
                let target_ty = target.map(|t| self.ty(t));
                let cost = match target_ty {
                    Some(Ty::List(elem)) => {
                        let mut per_element = Range::fixed(1);
                        if matches!(*elem, Ty::String | Ty::Bytes) {
                            per_element = per_element.add(traverse(self.element_size(target)));
                        }
                        size.mul(per_element)
                    }
                    _ => traverse(size),
                };
                (cost.add(arg_sum), None)
            }
            Overload::IndexList | Overload::IndexMap | Overload::Constant => {
                (Range::fixed(1).add(arg_sum), None)
            }
        }
    }

    /// The size of a list's elements, looked up in the schema through the list's path.
    fn element_size(&self, list: Option<&IdedExpr>) -> Range {
        let Some(list) = list else {
            return Range::UNKNOWN;
        };
        let mut path = self.path(list);
        if path.is_empty() {
            return Range::UNKNOWN;
        }
        path.push("@items".to_owned());
        self.estimate_size(&path).unwrap_or(Range::UNKNOWN)
    }

    fn push(&mut self, name: &str, local: Local) {
        self.locals.entry(name.to_owned()).or_default().push(local);
    }

    fn pop(&mut self, name: &str) {
        if let Some(stack) = self.locals.get_mut(name) {
            stack.pop();
        }
    }

    fn local(&self, name: &str) -> Option<&Local> {
        self.locals.get(name).and_then(|stack| stack.last())
    }

    fn ty(&self, e: &IdedExpr) -> Ty {
        self.types.get(&e.id).cloned().unwrap_or(Ty::Dyn)
    }

    fn path(&self, e: &IdedExpr) -> Vec<String> {
        if let Expr::Ident(name) = &e.expr
            && let Some(local) = self.local(name)
        {
            return local.path.clone();
        }
        self.paths.get(&e.id).cloned().unwrap_or_default()
    }

    /// The largest size of the schema value at `path` (its first element is the variable).
    fn estimate_size(&self, path: &[String]) -> Option<Range> {
        let (_, rest) = path.split_first()?;
        let mut node = self.root;
        for name in rest {
            node = match name.as_str() {
                "@items" | "@values" => node.elem()?,
                "@keys" => match &node.kind {
                    DeclKind::Map(key, _) => key,
                    _ => return None,
                },
                field => match &node.kind {
                    DeclKind::Object(fields) => fields.get(field)?,
                    _ => return None,
                },
            };
        }
        Some(Range {
            min: 0,
            max: u64::try_from(node.max_elements).unwrap_or(0),
        })
    }

    fn compute_size(&mut self, e: &IdedExpr) -> Option<Range> {
        if let Some(size) = self.sizes.get(&e.id) {
            return Some(*size);
        }
        if let Some(size) = expr_size(e) {
            return Some(size);
        }
        if let Some(size) = self.estimate_size(&self.path(e)) {
            self.sizes.insert(e.id, size);
            return Some(size);
        }
        if self.ty(e).is_scalar() {
            return Some(Range::fixed(1));
        }
        if let Expr::Ident(name) = &e.expr {
            return self.local(name).and_then(|local| local.size);
        }
        None
    }

    fn size_or_unknown(&mut self, e: &IdedExpr) -> Range {
        self.compute_size(e).unwrap_or(Range::UNKNOWN)
    }

    fn size_or_unknown_opt(&mut self, e: Option<&IdedExpr>) -> Range {
        e.map_or(Range::UNKNOWN, |e| self.size_or_unknown(e))
    }

    fn compute_entry(&self, e: &IdedExpr) -> Option<EntrySize> {
        if let Some(entry) = self.entries.get(&e.id) {
            return Some(*entry);
        }
        if let Expr::Ident(name) = &e.expr {
            return self.local(name).and_then(|local| local.entry);
        }
        None
    }
}

/// The size cel-go knows from the expression alone: literals and literal lists and maps.
fn expr_size(e: &IdedExpr) -> Option<Range> {
    let n = match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => s.inner().chars().count() as u64,
        Expr::Literal(LiteralValue::Bytes(b)) => b.inner().len() as u64,
        Expr::Literal(_) => 1,
        Expr::List(list) => list.elements.len() as u64,
        Expr::Map(map) => map.entries.len() as u64,
        _ => return None,
    };
    Some(Range::fixed(n))
}

fn literal_type(literal: &LiteralValue) -> Ty {
    match literal {
        LiteralValue::Boolean(_) => Ty::Bool,
        LiteralValue::Bytes(_) => Ty::Bytes,
        LiteralValue::Double(_) => Ty::Double,
        LiteralValue::Int(_) => Ty::Int,
        LiteralValue::Null => Ty::Null,
        LiteralValue::String(_) => Ty::String,
        LiteralValue::UInt(_) => Ty::Uint,
    }
}

fn literal_as_uint(literal: &LiteralValue) -> Option<u64> {
    match literal {
        LiteralValue::Int(i) => u64::try_from(*i.inner()).ok(),
        LiteralValue::UInt(u) => Some(*u.inner()),
        _ => None,
    }
}

/// The size of `s.replace(old, new)` (Kubernetes library estimator).
fn replace_size(size: Range, old: Range, new: Range) -> Range {
    let mut count = Range::fixed(0);
    let mut retained = Range::fixed(0);
    if old.min == 0 {
        count.max = if size.max < u64::MAX {
            size.max + 1
        } else {
            size.max
        };
        retained.max = size.max;
    } else if new.max <= old.min {
        retained.max = size.max;
    } else {
        count.max = (size.max as f64 / old.min as f64).ceil() as u64;
    }
    if old.max == 0 {
        count.min = if size.min < u64::MAX {
            size.min + 1
        } else {
            size.min
        };
        retained.min = size.min;
    } else if old.max <= new.min {
        retained.min = size.min;
    } else {
        count.min = (size.min as f64 / old.max as f64).ceil() as u64;
    }
    count.mul(new).add(retained)
}

/// The overload a call resolves to and its result type, from the operand types.
fn resolve(name: &str, target: Option<&Ty>, args: &[Ty]) -> Result<(Overload, Ty), Unsupported> {
    use Overload::*;
    let dyn_operand = || {
        unsupported(format!(
            "`{name}` on a value whose type is only known at run time"
        ))
    };
    let resolved = match (name, target, args) {
        (operators::LOGICAL_AND | operators::LOGICAL_OR, None, [_, _]) => (LogicalAndOr, Ty::Bool),
        (operators::CONDITIONAL, None, [_, then, otherwise]) => {
            let ty = if then.is_dyn() {
                otherwise.clone()
            } else {
                then.clone()
            };
            (Conditional, ty)
        }
        (operators::LOGICAL_NOT | operators::NOT_STRICTLY_FALSE, None, [_]) => (Constant, Ty::Bool),
        (operators::NEGATE, None, [operand]) => (Constant, operand.clone()),
        (operators::EQUALS | operators::NOT_EQUALS, None, [_, _]) => (CompareSized, Ty::Bool),
        (
            operators::LESS | operators::LESS_EQUALS | operators::GREATER | operators::GREATER_EQUALS,
            None,
            [a, b],
        ) => match (a, b) {
            (Ty::Dyn, _) | (_, Ty::Dyn) => (CompareDyn, Ty::Bool),
            (Ty::String, Ty::String) | (Ty::Bytes, Ty::Bytes) => (CompareSized, Ty::Bool),
            _ => (Constant, Ty::Bool),
        },
        (operators::ADD, None, [a, b]) => match (a, b) {
            (Ty::String, Ty::String) => (AddString, Ty::String),
            (Ty::Bytes, Ty::Bytes) => (AddString, Ty::Bytes),
            (Ty::List(x), Ty::List(y)) => (AddList, Ty::List(if x.is_dyn() { y.clone() } else { x.clone() })),
            (Ty::Dyn, _) | (_, Ty::Dyn) => return dyn_operand(),
            (Ty::Duration, Ty::Timestamp) => (Constant, Ty::Timestamp),
            (a, _) => (Constant, a.clone()),
        },
        (
            operators::SUBSTRACT | operators::MULTIPLY | operators::DIVIDE | operators::MODULO,
            None,
            [a, b],
        ) => match (a, b) {
            (Ty::Dyn, _) | (_, Ty::Dyn) => return dyn_operand(),
            (Ty::Timestamp, Ty::Timestamp) => (Constant, Ty::Duration),
            (a, _) => (Constant, a.clone()),
        },
        (operators::INDEX, None, [container, _]) => match container {
            Ty::List(elem) => (IndexList, (**elem).clone()),
            Ty::Map(_, value) => (IndexMap, (**value).clone()),
            _ => return dyn_operand(),
        },
        (operators::IN, None, [_, container]) => match container {
            Ty::List(_) => (InList, Ty::Bool),
            Ty::Map(..) => (Constant, Ty::Bool),
            _ => return dyn_operand(),
        },
        ("size", Some(t), []) | ("size", None, [t]) => match t {
            Ty::String | Ty::Bytes | Ty::List(_) | Ty::Map(..) | Ty::Dyn => (Constant, Ty::Int),
            other => return unsupported(format!("`size` of a {}", other.name())),
        },
        ("matches", Some(Ty::String), [Ty::String]) => (MatchesMember, Ty::Bool),
        ("matches", None, [Ty::String, Ty::String]) => (Constant, Ty::Bool),
        ("contains", Some(Ty::String), [Ty::String]) => (Contains, Ty::Bool),
        ("startsWith" | "endsWith", Some(Ty::String), [Ty::String]) => (StartsOrEndsWith, Ty::Bool),
        ("bytes", None, [Ty::String]) => (StringToBytes, Ty::Bytes),
        ("string", None, [Ty::Bytes]) => (BytesToString, Ty::String),
        ("string", None, [_]) => (Constant, Ty::String),
        ("int", None, [_]) => (Constant, Ty::Int),
        ("uint", None, [_]) => (Constant, Ty::Uint),
        ("double", None, [_]) => (Constant, Ty::Double),
        ("bool", None, [_]) => (Constant, Ty::Bool),
        ("bytes", None, [_]) => (Constant, Ty::Bytes),
        ("duration", None, [Ty::String]) => (Constant, Ty::Duration),
        ("timestamp", None, [Ty::String]) => (Constant, Ty::Timestamp),
        ("type", None, [_]) => (Constant, Ty::Type),
        ("lowerAscii" | "upperAscii" | "trim", Some(Ty::String), []) => (LibTraverse, Ty::String),
        ("substring", Some(Ty::String), [Ty::Int] | [Ty::Int, Ty::Int]) => (LibTraverse, Ty::String),
        ("replace", Some(Ty::String), [Ty::String, Ty::String] | [Ty::String, Ty::String, Ty::Int]) => {
            (LibReplace, Ty::String)
        }
        ("split", Some(Ty::String), [Ty::String] | [Ty::String, Ty::Int]) => {
            (LibSplit, Ty::List(Box::new(Ty::String)))
        }
        ("join", Some(Ty::List(elem)), [] | [Ty::String]) if matches!(**elem, Ty::String) => {
            (LibJoin, Ty::String)
        }
        ("find", Some(Ty::String), [Ty::String]) => (LibFind, Ty::String),
        ("findAll", Some(Ty::String), [Ty::String] | [Ty::String, Ty::Int]) => {
            (LibFind, Ty::List(Box::new(Ty::String)))
        }
        ("indexOf" | "lastIndexOf", Some(Ty::String), [Ty::String] | [Ty::String, Ty::Int]) => {
            (LibScan, Ty::Int)
        }
        ("indexOf" | "lastIndexOf", Some(Ty::List(_)), [_]) => (LibScan, Ty::Int),
        ("isSorted", Some(Ty::List(_)), []) => (LibScan, Ty::Bool),
        ("sum" | "min" | "max", Some(Ty::List(elem)), []) => (LibScan, (**elem).clone()),
        ("charAt", Some(Ty::String), [Ty::Int]) => (Constant, Ty::String),
        _ if target.is_some_and(Ty::is_dyn) || args.iter().any(Ty::is_dyn) => return dyn_operand(),
        _ => {
            let on = target.map(|t| format!(" on a {}", t.name())).unwrap_or_default();
            let with: Vec<&str> = args.iter().map(Ty::name).collect();
            return unsupported(format!(
                "the function `{name}`{on} with arguments ({})",
                with.join(", ")
            ));
        }
    };
    Ok(resolved)
}
