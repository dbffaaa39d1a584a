//! HCL config files, converted to the same JSON value tree as JSON files so that one
//! normalizer, merge and validation serve both.
//!
//! Consul reads HCL 1 into `map[string]interface{}`; hcl-rs reads HCL 2, which is the same
//! syntax for everything Consul configs use (attributes, blocks, lists, objects, heredocs,
//! comments). The conversion follows Consul's shapes: a block becomes an object, a block
//! repeated under the same name becomes a list (`services {}` `services {}`), labels nest
//! (`sink "file" { ... }` becomes `{"sink": {"file": {...}}}`), and `-1` is a number.
//! Only literal values are allowed: HCL 2 expressions that HCL 1 did not have (variables,
//! function calls, conditionals) are rejected with the line they are on, never evaluated,
//! and a `${...}` sequence in a string is kept literally, as Consul's HCL 1 did.

use hcl::expr::{Expression, ObjectKey, TemplateExpr, UnaryOperator};
use hcl::structure::{BlockLabel, Body, Structure};
use serde_json::{Map, Number, Value};

/// Why an HCL file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HclError {
    /// Not HCL: the parser's message and position (1-based).
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// Valid HCL that is not a Consul config value (an expression); hcl-rs keeps no
    /// positions after parsing, so the key says where.
    Content { key: String, message: String },
}

/// Deepest nesting of blocks, objects, lists and parentheses accepted. hcl-rs's parser
/// takes time exponential in the depth of some invalid nested expressions (found by the
/// `config` fuzz target: 28 levels took seconds), and no real config or ACL policy comes
/// near this.
pub(crate) const MAX_NESTING: usize = 16;

/// Parses HCL text into a JSON object.
pub(crate) fn to_json(text: &str) -> Result<Value, HclError> {
    check_nesting(text)?;
    let body = hcl::parse(text).map_err(|e| match e {
        hcl::Error::Parse(p) => HclError::Syntax {
            line: p.location().line(),
            column: p.location().column(),
            message: p.message().to_owned(),
        },
        other => HclError::Syntax {
            line: 1,
            column: 1,
            message: other.to_string(),
        },
    })?;
    body_to_json(body).map(Value::Object)
}

/// Refuses text nested deeper than [`MAX_NESTING`] (brackets in strings and comments are
/// not counted), with the line where it happens.
fn check_nesting(text: &str) -> Result<(), HclError> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        column += 1;
        match c {
            '\n' => {
                line += 1;
                column = 0;
            }
            '"' => {
                // A string: to its closing quote (escapes skipped), or the end of the line.
                while let Some(s) = chars.next() {
                    match s {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        '\n' => {
                            line += 1;
                            column = 0;
                            break;
                        }
                        _ => {}
                    }
                }
            }
            '#' => {
                while chars.peek().is_some_and(|c| *c != '\n') {
                    chars.next();
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                while chars.peek().is_some_and(|c| *c != '\n') {
                    chars.next();
                }
            }
            '{' | '[' | '(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(HclError::Syntax {
                        line,
                        column,
                        message: format!("nested more than {MAX_NESTING} levels deep"),
                    });
                }
            }
            '}' | ']' | ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn content_error(key: &str, message: String) -> HclError {
    HclError::Content {
        key: key.to_owned(),
        message,
    }
}

fn body_to_json(body: Body) -> Result<Map<String, Value>, HclError> {
    let mut out = Map::new();
    for structure in body {
        let (key, value) = match structure {
            Structure::Attribute(attr) => {
                let key = attr.key.to_string();
                let value = expr_to_json(attr.expr, &key)?;
                (key, value)
            }
            Structure::Block(block) => {
                let key = block.identifier.to_string();
                let mut value = Value::Object(body_to_json(block.body)?);
                for label in block.labels.into_iter().rev() {
                    let label = match label {
                        BlockLabel::Identifier(i) => i.to_string(),
                        BlockLabel::String(s) => s,
                    };
                    let mut m = Map::new();
                    m.insert(label, value);
                    value = Value::Object(m);
                }
                (key, value)
            }
        };
        // A repeated name collects into a list, as HCL 1 does for repeated blocks.
        match out.get_mut(&key) {
            Some(Value::Array(items)) if !value.is_array() => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                out.insert(key, value);
            }
        }
    }
    Ok(out)
}

fn expr_to_json(expr: Expression, key: &str) -> Result<Value, HclError> {
    Ok(match expr {
        Expression::Null => Value::Null,
        Expression::Bool(b) => Value::Bool(b),
        Expression::Number(n) => number(&n, false),
        Expression::String(s) => Value::String(s),
        Expression::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|e| expr_to_json(e, key))
                .collect::<Result<_, _>>()?,
        ),
        Expression::Object(obj) => {
            let mut m = Map::new();
            for (k, v) in obj {
                let k = match k {
                    ObjectKey::Identifier(i) => i.to_string(),
                    ObjectKey::Expression(e) => match expr_to_json(e, key)? {
                        Value::String(s) => s,
                        other => {
                            return Err(content_error(
                                key,
                                format!("object keys must be names or strings, got {other}"),
                            ));
                        }
                    },
                    _ => {
                        return Err(content_error(
                            key,
                            "object keys must be names or strings".to_owned(),
                        ));
                    }
                };
                let v = expr_to_json(v, &k)?;
                m.insert(k, v);
            }
            Value::Object(m)
        }
        Expression::TemplateExpr(t) => Value::String(match *t {
            TemplateExpr::QuotedString(raw) => unescape(&raw),
            TemplateExpr::Heredoc(h) => h.template,
        }),
        Expression::Parenthesis(inner) => expr_to_json(*inner, key)?,
        Expression::Operation(op) => match *op {
            hcl::expr::Operation::Unary(u) if u.operator == UnaryOperator::Neg => match u.expr {
                Expression::Number(n) => number(&n, true),
                _ => return Err(not_literal(key)),
            },
            _ => return Err(not_literal(key)),
        },
        _ => return Err(not_literal(key)),
    })
}

fn not_literal(key: &str) -> HclError {
    content_error(
        key,
        "only literal values are allowed in config files (no variables, functions or \
         operators)"
            .to_owned(),
    )
}

fn number(n: &hcl::Number, negate: bool) -> Value {
    if let Some(i) = n.as_i64() {
        return Value::from(if negate { -i } else { i });
    }
    if let Some(u) = n.as_u64() {
        return Value::from(u);
    }
    let f = n.as_f64().unwrap_or(0.0);
    Number::from_f64(if negate { -f } else { f }).map_or(Value::Null, Value::Number)
}

/// Undoes the escapes HCL allows in a quoted string (the parser keeps templates raw).
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => {
                        out.push_str("\\u");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn consul_style_hcl_converts() {
        let text = r#"
            # agent settings
            datacenter = "dc1"
            server = true
            bootstrap_expect = 3
            retry_join = ["10.0.0.1", "10.0.0.2"]
            ports {
              dns   = 53
              https = -1
            }
            node_meta = {
              rack = "r1"
            }
            service {
              name = "web"
              tags = ["a"]
              check {
                id       = "web-http"
                http     = "http://127.0.0.1:8080/health"
                interval = "10s"
              }
            }
            audit {
              sink "file" {
                type = "file"
              }
            }
            claim = "value.node == \"${node}\""
        "#;
        let v = to_json(text).unwrap();
        assert_eq!(v["datacenter"], json!("dc1"));
        assert_eq!(v["bootstrap_expect"], json!(3));
        assert_eq!(v["ports"], json!({"dns": 53, "https": -1}));
        assert_eq!(v["node_meta"], json!({"rack": "r1"}));
        assert_eq!(v["service"]["check"]["interval"], json!("10s"));
        assert_eq!(v["audit"]["sink"]["file"]["type"], json!("file"));
        assert_eq!(v["claim"], json!("value.node == \"${node}\""));
    }

    #[test]
    fn repeated_blocks_become_lists() {
        let v = to_json("services {\n name = \"a\"\n}\nservices {\n name = \"b\"\n}\nservices {\n name = \"c\"\n}\n")
            .unwrap();
        assert_eq!(
            v["services"],
            json!([{"name": "a"}, {"name": "b"}, {"name": "c"}])
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = to_json("datacenter = \"dc1\"\nserver = = true\n").unwrap_err();
        assert!(
            matches!(e, HclError::Syntax { line: 2, column, .. } if column > 0),
            "{e:?}"
        );
    }

    #[test]
    fn expressions_are_refused() {
        let e = to_json("data_dir = var.dir\n").unwrap_err();
        assert!(
            matches!(&e, HclError::Content { key, message } if key == "data_dir" && message.contains("only literal values")),
            "{e:?}"
        );
        let e = to_json("retry_max = 1 + 2\n").unwrap_err();
        assert!(
            matches!(&e, HclError::Content { key, .. } if key == "retry_max"),
            "{e:?}"
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        // The fuzzer's input: seconds in hcl-rs without the bound, refused at once with it.
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/regressions/config/hcl-nested-exprs-timeout"
        ))
        .unwrap();
        let text = std::str::from_utf8(&data[1..]).unwrap();
        let started = std::time::Instant::now();
        let e = to_json(text).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(
            matches!(&e, HclError::Syntax { message, .. } if message.contains("16 levels")),
            "{e:?}"
        );
        // Sixteen levels are fine; brackets in strings and comments do not count.
        let ok = format!("a = {}1{}", "[".repeat(16), "]".repeat(16));
        assert!(to_json(&ok).is_ok());
        let quoted = format!("a = \"{}\" # {}\n", "{".repeat(40), "(".repeat(40));
        assert!(to_json(&quoted).is_ok());
        let deep = format!("a = {}1{}", "[".repeat(17), "]".repeat(17));
        assert!(to_json(&deep).is_err());
    }
}
