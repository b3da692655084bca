//! The audit log: one JSON line per mutating request (and per denial), whoever made it and
//! however it ended.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

/// One audited request.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// When it finished (RFC 3339).
    pub time: String,
    /// The user (certificate CN).
    pub user: String,
    /// The groups (certificate O, plus system:authenticated).
    pub groups: Vec<String>,
    /// create, update, patch, delete, apply, get, list, watch.
    pub verb: String,
    /// Plural resource.
    pub resource: String,
    /// "" or "status".
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    /// Namespace, "" for cluster scope.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Object name, "" when not known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// gRPC status code name: "Ok", "PermissionDenied", …
    pub code: String,
    /// The error message when it failed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Appends entries to a file (or nowhere, when not configured).
#[derive(Debug)]
pub struct Audit {
    path: Option<PathBuf>,
    file: Mutex<Option<std::fs::File>>,
}

impl Audit {
    /// An audit log appending to `path`; `None` keeps no log.
    ///
    /// # Errors
    /// When the file cannot be opened for appending.
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)?,
                )
            }
            None => None,
        };
        Ok(Audit {
            path: path.map(Path::to_path_buf),
            file: Mutex::new(file),
        })
    }

    /// Writes one entry. A failing audit log is reported in the server log, and the
    /// request is not failed for it (Kubernetes' default "best effort" mode).
    pub fn record(&self, entry: &Entry) {
        self.record_all(std::slice::from_ref(entry));
    }

    /// Writes entries in one write (the items of a batch call), as [`Audit::record`].
    pub fn record_all(&self, entries: &[Entry]) {
        let mut lines = Vec::new();
        for e in entries {
            if serde_json::to_writer(&mut lines, e).is_ok() {
                lines.push(b'\n');
            }
        }
        if lines.is_empty() {
            return;
        }
        let Ok(mut guard) = self.file.lock() else {
            return;
        };
        if let Some(f) = guard.as_mut() {
            if let Err(e) = f.write_all(&lines) {
                tracing::warn!(error = %e, path = ?self.path, "writing the audit log failed");
            }
        }
    }
}
