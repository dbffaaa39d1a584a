//! Config sources on disk: `-config-file` and `-config-dir` paths, read in command-line
//! order; inside a directory only `*.json` and `*.hcl` files, in lexical order of their
//! names, not recursively (Consul's rules).
//!
//! Unlike Consul, which skips other files silently (the cause of many "data_dir cannot be
//! empty" puzzles), every file read or skipped is recorded with the reason in a
//! [`FileEvent`], and skipped files also produce a warning.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::error::ConfigError;
use super::hcl::HclError;
use super::normalize::{Mode, Walker, translate_deprecated};
use super::schema::CONFIG;

/// The format of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    /// JSON (`.json`).
    Json,
    /// HCL (`.hcl`).
    Hcl,
}

impl ConfigFormat {
    /// Reads `-config-format`: `json` or `hcl`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s {
            "json" => Ok(ConfigFormat::Json),
            "hcl" => Ok(ConfigFormat::Hcl),
            _ => Err(ConfigError::Flags(
                "config: -config-format must be either 'hcl' or 'json'".to_owned(),
            )),
        }
    }

    fn from_extension(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "json" => Some(ConfigFormat::Json),
            "hcl" => Some(ConfigFormat::Hcl),
            _ => None,
        }
    }
}

/// What happened to one file found through the config paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEvent {
    /// The file, as reached from the path given on the command line.
    pub path: PathBuf,
    /// Read, empty or skipped.
    pub outcome: FileOutcome,
}

/// The outcome for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// Parsed and merged.
    Loaded,
    /// Empty (or only whitespace): nothing to merge.
    Empty,
    /// Not read, for this reason.
    Skipped(String),
}

/// One file's content, ready to parse.
pub(crate) struct RawFile {
    pub name: Arc<str>,
    pub text: String,
    pub format: ConfigFormat,
}

/// Reads the files behind one `-config-file`/`-config-dir` path.
pub(crate) fn read_path(
    path: &Path,
    format: Option<ConfigFormat>,
    events: &mut Vec<FileEvent>,
    warnings: &mut Vec<String>,
) -> Result<Vec<RawFile>, ConfigError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    if !meta.is_dir() {
        let Some(format) = format.or_else(|| ConfigFormat::from_extension(path)) else {
            return Err(ConfigError::UnknownExtension { path: shown });
        };
        return Ok(vec![read_file(path, format)?]);
    }

    let entries = std::fs::read_dir(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        names.push(entry.file_name());
    }
    // Lexical order of the names, byte by byte, as Go's sort of file names.
    names.sort();

    let mut files = Vec::new();
    for name in names {
        let file = path.join(&name);
        // metadata() follows symlinks, as Consul resolves them.
        let meta = std::fs::metadata(&file).map_err(|source| ConfigError::Read {
            path: file.display().to_string(),
            source,
        })?;
        if meta.is_dir() {
            let reason = "it is a directory; config directories are not searched recursively";
            events.push(FileEvent {
                path: file,
                outcome: FileOutcome::Skipped(reason.to_owned()),
            });
            continue;
        }
        let Some(format) = format.or_else(|| ConfigFormat::from_extension(&file)) else {
            warnings.push(format!(
                "skipping file {}, extension must be .hcl or .json, or config format must be set",
                file.display()
            ));
            events.push(FileEvent {
                path: file,
                outcome: FileOutcome::Skipped(
                    "extension must be .hcl or .json, or config format must be set".to_owned(),
                ),
            });
            continue;
        };
        files.push(read_file(&file, format)?);
    }
    Ok(files)
}

fn read_file(path: &Path, format: ConfigFormat) -> Result<RawFile, ConfigError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::Syntax {
        path: shown.clone(),
        line: 1,
        column: 1,
        message: format!("the file is not UTF-8: {e}"),
    })?;
    Ok(RawFile {
        name: Arc::from(shown),
        text,
        format,
    })
}

/// Parses one file's text into a JSON value (`None` for an empty file).
pub(crate) fn parse(file: &RawFile) -> Result<Option<Value>, ConfigError> {
    if file.text.trim().is_empty() {
        return Ok(None);
    }
    let value = match file.format {
        ConfigFormat::Json => serde_json::from_str::<Value>(&file.text).map_err(|e| {
            let mut message = e.to_string();
            // serde_json appends " at line L column C"; the position has its own fields.
            if let Some(cut) = message.rfind(" at line ") {
                message.truncate(cut);
            }
            ConfigError::Syntax {
                path: file.name.to_string(),
                line: e.line(),
                column: e.column(),
                message,
            }
        })?,
        ConfigFormat::Hcl => super::hcl::to_json(&file.text).map_err(|e| match e {
            HclError::Syntax {
                line,
                column,
                message,
            } => ConfigError::Syntax {
                path: file.name.to_string(),
                line,
                column,
                message,
            },
            HclError::Content { key, message } => {
                ConfigError::invalid(Some(&file.name), key, message)
            }
        })?,
    };
    if !value.is_object() {
        return Err(ConfigError::Syntax {
            path: file.name.to_string(),
            line: 1,
            column: 1,
            message: "the top level must be an object".to_owned(),
        });
    }
    Ok(Some(value))
}

/// Normalizes one source's top-level object: deprecated keys translated, keys canonical,
/// types checked, and a single `service`/`check` moved into `services`/`checks` (Consul adds
/// each file's single block as one more list entry, after the file's own list).
pub(crate) fn normalize_source(
    name: &str,
    value: Value,
    warnings: &mut Vec<String>,
) -> Result<Map<String, Value>, ConfigError> {
    let mut map = match value {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    translate_deprecated(&mut map, name, warnings);
    let mut out = Walker::new(Mode::File, name, warnings)
        .object(&CONFIG, Value::Object(map), "")
        .map_err(|p| p.into_config_error(name))?;
    for (single, list) in [("service", "services"), ("check", "checks")] {
        if let Some(Value::Array(items)) = out.remove(single) {
            let slot = out
                .entry(list.to_owned())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(existing) = slot {
                existing.extend(items);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn directory_files_in_lexical_order_and_skips_recorded() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b.json"), "{}").unwrap();
        fs::write(dir.path().join("a.hcl"), "").unwrap();
        fs::write(dir.path().join("10.json"), "{}").unwrap();
        fs::write(dir.path().join("agent.json~"), "{}").unwrap();
        fs::write(dir.path().join("README.md"), "x").unwrap();
        fs::create_dir(dir.path().join("sub.json")).unwrap();
        let mut events = Vec::new();
        let mut warnings = Vec::new();
        let files = read_path(dir.path(), None, &mut events, &mut warnings).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| {
                Path::new(&*f.name)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, ["10.json", "a.hcl", "b.json"]);
        let skipped: Vec<String> = events
            .iter()
            .filter(|e| matches!(e.outcome, FileOutcome::Skipped(_)))
            .map(|e| e.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(skipped, ["README.md", "agent.json~", "sub.json"]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("README.md"));
        assert!(warnings[0].contains("extension must be .hcl or .json"));
    }

    #[test]
    fn config_format_forces_every_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("agent.conf"), "{}").unwrap();
        let mut events = Vec::new();
        let mut warnings = Vec::new();
        let files = read_path(
            dir.path(),
            Some(ConfigFormat::Json),
            &mut events,
            &mut warnings,
        )
        .unwrap();
        assert_eq!(files.len(), 1);
        let err = read_path(
            &dir.path().join("agent.conf"),
            None,
            &mut events,
            &mut warnings,
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .ends_with("agent.conf has unknown extension; must be .hcl or .json, or config format must be set"),
            "{err}"
        );
    }

    #[test]
    fn bad_json_names_file_line_and_column() {
        let file = RawFile {
            name: Arc::from("x/agent.json"),
            text: "{\n  \"server\": true,\n  \"datacenter\" \"dc1\"\n}\n".to_owned(),
            format: ConfigFormat::Json,
        };
        let err = parse(&file).err().unwrap();
        match &err {
            ConfigError::Syntax {
                path, line, column, ..
            } => {
                assert_eq!(path, "x/agent.json");
                assert_eq!(*line, 3);
                assert!(*column > 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("x/agent.json: syntax error at line 3, column")
        );
        let top = RawFile {
            name: Arc::from("t.json"),
            text: "[1]".to_owned(),
            format: ConfigFormat::Json,
        };
        assert!(parse(&top).err().unwrap().is_syntax());
    }

    #[test]
    fn single_service_and_check_become_list_entries() {
        let mut w = Vec::new();
        let out = normalize_source(
            "f.json",
            serde_json::json!({"services": [{"name": "a"}], "service": {"name": "b"}, "check": {"name": "c", "ttl": "1s"}}),
            &mut w,
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            serde_json::json!({"services": [{"name": "a"}, {"name": "b"}], "checks": [{"name": "c", "ttl": "1s"}]})
        );
    }
}
