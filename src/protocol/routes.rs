//! V2 paths to routes.

use std::borrow::Cow;

use super::ProtocolError;
use crate::http::Method;

#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    ServerMetadata,
    Live,
    Ready,
    ModelMetadata(ModelRef<'a>),
    ModelReady(ModelRef<'a>),
    ModelConfig(ModelRef<'a>),
    /// Statistics of one model, or of all (`None`).
    ModelStats(Option<ModelRef<'a>>),
    Infer(ModelRef<'a>),
    RepositoryIndex,
    Load(Cow<'a, str>),
    Unload(Cow<'a, str>),
}

#[derive(Debug, PartialEq, Eq)]
pub struct ModelRef<'a> {
    pub name: Cow<'a, str>,
    pub version: Option<Cow<'a, str>>,
}

impl Route<'_> {
    pub fn method(&self) -> Method {
        match self {
            Route::Infer(_) | Route::RepositoryIndex | Route::Load(_) | Route::Unload(_) => {
                Method::Post
            }
            _ => Method::Get,
        }
    }
}

/// Matches a path; `Ok(None)` for paths that name nothing here.
pub fn route(path: &str) -> Result<Option<Route<'_>>, ProtocolError> {
    let mut parts = path.strip_prefix('/').unwrap_or(path).split('/');
    if parts.next() != Some("v2") {
        return Ok(None);
    }
    let rest: Vec<&str> = parts.collect();
    Ok(Some(match rest.as_slice() {
        [] | [""] => Route::ServerMetadata,
        ["health", "live"] => Route::Live,
        ["health", "ready"] => Route::Ready,
        ["models", "stats"] => Route::ModelStats(None),
        ["models", m] => Route::ModelMetadata(model(m, None)?),
        ["models", m, "stats"] => Route::ModelStats(Some(model(m, None)?)),
        ["models", m, "versions", v, "stats"] => Route::ModelStats(Some(model(m, Some(v))?)),
        ["models", m, "ready"] => Route::ModelReady(model(m, None)?),
        ["models", m, "infer"] => Route::Infer(model(m, None)?),
        ["models", m, "config"] => Route::ModelConfig(model(m, None)?),
        ["models", m, "versions", v, "config"] => Route::ModelConfig(model(m, Some(v))?),
        ["repository", "index"] => Route::RepositoryIndex,
        ["repository", "models", m, "load"] => Route::Load(percent_decode(m)?),
        ["repository", "models", m, "unload"] => Route::Unload(percent_decode(m)?),
        ["models", m, "versions", v] => Route::ModelMetadata(model(m, Some(v))?),
        ["models", m, "versions", v, "ready"] => Route::ModelReady(model(m, Some(v))?),
        ["models", m, "versions", v, "infer"] => Route::Infer(model(m, Some(v))?),
        _ => return Ok(None),
    }))
}

fn model<'a>(name: &'a str, version: Option<&'a str>) -> Result<ModelRef<'a>, ProtocolError> {
    Ok(ModelRef {
        name: percent_decode(name)?,
        version: version.map(percent_decode).transpose()?,
    })
}

/// Decodes %XX escapes (clients quote model names).
fn percent_decode(segment: &str) -> Result<Cow<'_, str>, ProtocolError> {
    if !segment.contains('%') {
        return Ok(Cow::Borrowed(segment));
    }
    let bad = || ProtocolError::bad_request(format!("invalid percent-encoding in '{segment}'"));
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map(Cow::Owned).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, version: Option<&str>) -> ModelRef<'static> {
        ModelRef {
            name: Cow::Owned(name.into()),
            version: version.map(|v| Cow::Owned(v.into())),
        }
    }

    #[test]
    fn paths() {
        assert_eq!(route("/v2").unwrap(), Some(Route::ServerMetadata));
        assert_eq!(route("/v2/").unwrap(), Some(Route::ServerMetadata));
        assert_eq!(route("/v2/health/ready").unwrap(), Some(Route::Ready));
        assert_eq!(
            route("/v2/models/a%20b/versions/3/infer").unwrap(),
            Some(Route::Infer(model("a b", Some("3"))))
        );
        assert_eq!(
            route("/v2/models/m/ready").unwrap(),
            Some(Route::ModelReady(model("m", None)))
        );
        assert_eq!(route("/v2/models/m/stats/x").unwrap(), None);
        assert_eq!(
            route("/v2/models/stats").unwrap(),
            Some(Route::ModelStats(None))
        );
        assert_eq!(
            route("/v2/models/m/versions/1/stats").unwrap(),
            Some(Route::ModelStats(Some(model("m", Some("1")))))
        );
        assert_eq!(
            route("/v2/repository/index").unwrap(),
            Some(Route::RepositoryIndex)
        );
        assert_eq!(
            route("/v2/repository/models/a%2Fb/unload").unwrap(),
            Some(Route::Unload(Cow::Owned("a/b".into())))
        );
        assert_eq!(
            route("/v2/models/m/versions/2/config").unwrap(),
            Some(Route::ModelConfig(model("m", Some("2"))))
        );
        assert_eq!(route("/v1/models/m").unwrap(), None);
        assert_eq!(route("/v2/models/%zz").unwrap_err().status, 400);
        assert_eq!(route("/v2/models/%ff").unwrap_err().status, 400);
    }
}
