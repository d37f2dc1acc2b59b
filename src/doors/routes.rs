//! The route table: every endpoint of every HTTP front door, path and method together.

use std::borrow::Cow;

use super::restricted::Group;
use crate::engine::Error;
use crate::http::{HttpError, Method};

#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// Prometheus text (`/metrics`).
    Metrics,
    /// Triton's logging extension: the log settings, read (GET) or changed (POST).
    Logging,
    V2(V2Route<'a>),
    Tfs(TfsRoute<'a>),
}

/// The Open Inference Protocol (V2) and Triton's extensions.
#[derive(Debug, PartialEq, Eq)]
pub enum V2Route<'a> {
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
    /// Trace settings, global or of one model: read (GET) or changed (POST).
    TraceSetting(Option<ModelRef<'a>>),
    /// Triton's shared-memory extension: system (or CUDA) regions, all or the one named.
    SharedMemory {
        cuda: bool,
        region: Option<Cow<'a, str>>,
        action: ShmAction,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShmAction {
    Status,
    Register,
    Unregister,
}

/// TensorFlow Serving's REST API.
#[derive(Debug, PartialEq, Eq)]
pub enum TfsRoute<'a> {
    Status(ModelRef<'a>),
    Metadata(ModelRef<'a>),
    Predict(ModelRef<'a>),
}

#[derive(Debug, PartialEq, Eq)]
pub struct ModelRef<'a> {
    pub name: Cow<'a, str>,
    pub version: Option<Cow<'a, str>>,
}

impl Route<'_> {
    /// The restricted-API group the route belongs to (`/metrics` is in none, as in Triton,
    /// where it has a port of its own).
    pub fn group(&self) -> Option<Group> {
        Some(match self {
            Route::Metrics => return None,
            Route::Logging => Group::Logging,
            Route::V2(route) => match route {
                V2Route::Live | V2Route::Ready | V2Route::ModelReady(_) => Group::Health,
                V2Route::ServerMetadata | V2Route::ModelMetadata(_) => Group::Metadata,
                V2Route::ModelConfig(_) => Group::ModelConfig,
                V2Route::ModelStats(_) => Group::Statistics,
                V2Route::Infer(_) => Group::Inference,
                V2Route::RepositoryIndex | V2Route::Load(_) | V2Route::Unload(_) => {
                    Group::ModelRepository
                }
                V2Route::TraceSetting(_) => Group::Trace,
                V2Route::SharedMemory { .. } => Group::SharedMemory,
            },
            Route::Tfs(route) => match route {
                TfsRoute::Status(_) => Group::Health,
                TfsRoute::Metadata(_) => Group::Metadata,
                TfsRoute::Predict(_) => Group::Inference,
            },
        })
    }

    /// The methods the route takes (HEAD counts as GET).
    pub fn methods(&self) -> &'static [Method] {
        let post = match self {
            Route::Logging | Route::V2(V2Route::TraceSetting(_)) => {
                return &[Method::Get, Method::Post]
            }
            Route::V2(
                V2Route::Infer(_)
                | V2Route::RepositoryIndex
                | V2Route::Load(_)
                | V2Route::Unload(_)
                | V2Route::SharedMemory {
                    action: ShmAction::Register | ShmAction::Unregister,
                    ..
                },
            )
            | Route::Tfs(TfsRoute::Predict(_)) => true,
            _ => false,
        };
        if post {
            &[Method::Post]
        } else {
            &[Method::Get]
        }
    }
}

/// The route of `method` on `path`: 404 for a path that names nothing, 405 (with `Allow`, the
/// path as written) for a method the path does not take, 400 for a bad percent-escape.
pub fn route(method: Method, path: &str) -> Result<Route<'_>, HttpError> {
    let route = match path {
        "/metrics" => Some(Route::Metrics),
        "/v2/logging" => Some(Route::Logging),
        _ if path.starts_with("/v1/") => tfs_route(path)?.map(Route::Tfs),
        _ => v2_route(path)?.map(Route::V2),
    };
    let route = route.ok_or_else(|| HttpError::new(404, format!("no such endpoint: {path}")))?;
    let method = match method {
        Method::Head => Method::Get,
        other => other,
    };
    if !route.methods().contains(&method) {
        return Err(HttpError::wrong_method(path, route.methods()));
    }
    Ok(route)
}

fn v2_route(path: &str) -> Result<Option<V2Route<'_>>, Error> {
    let mut parts = path.strip_prefix('/').unwrap_or(path).split('/');
    if parts.next() != Some("v2") {
        return Ok(None);
    }
    let rest: Vec<&str> = parts.collect();
    Ok(Some(match rest.as_slice() {
        [] | [""] => V2Route::ServerMetadata,
        ["health", "live"] => V2Route::Live,
        ["health", "ready"] => V2Route::Ready,
        ["models", "stats"] => V2Route::ModelStats(None),
        ["models", m] => V2Route::ModelMetadata(model(m, None)?),
        ["models", m, "stats"] => V2Route::ModelStats(Some(model(m, None)?)),
        ["models", m, "versions", v, "stats"] => V2Route::ModelStats(Some(model(m, Some(v))?)),
        ["models", m, "ready"] => V2Route::ModelReady(model(m, None)?),
        ["models", m, "infer"] => V2Route::Infer(model(m, None)?),
        ["models", m, "config"] => V2Route::ModelConfig(model(m, None)?),
        ["models", m, "versions", v, "config"] => V2Route::ModelConfig(model(m, Some(v))?),
        ["repository", "index"] => V2Route::RepositoryIndex,
        ["trace", "setting"] => V2Route::TraceSetting(None),
        ["models", m, "trace", "setting"] => V2Route::TraceSetting(Some(model(m, None)?)),
        ["repository", "models", m, "load"] => V2Route::Load(percent_decode(m)?),
        ["repository", "models", m, "unload"] => V2Route::Unload(percent_decode(m)?),
        ["models", m, "versions", v] => V2Route::ModelMetadata(model(m, Some(v))?),
        ["models", m, "versions", v, "ready"] => V2Route::ModelReady(model(m, Some(v))?),
        ["models", m, "versions", v, "infer"] => V2Route::Infer(model(m, Some(v))?),
        [kind @ ("systemsharedmemory" | "cudasharedmemory"), rest @ ..] => {
            let (region, action) = match rest {
                [action] => (None, *action),
                ["region", name, action] => (Some(percent_decode(name)?), *action),
                _ => return Ok(None),
            };
            let action = match action {
                "status" => ShmAction::Status,
                "register" => ShmAction::Register,
                "unregister" => ShmAction::Unregister,
                _ => return Ok(None),
            };
            V2Route::SharedMemory {
                cuda: *kind == "cudasharedmemory",
                region,
                action,
            }
        }
        _ => return Ok(None),
    }))
}

/// `/v1/models/{m}[/versions/{v}][/metadata | :predict]`; version 0 means the default one.
/// Names and versions are percent-decoded, as V2's are.
fn tfs_route(path: &str) -> Result<Option<TfsRoute<'_>>, Error> {
    let Some(rest) = path.strip_prefix("/v1/models/") else {
        return Ok(None);
    };
    let (rest, predict) = match rest.strip_suffix(":predict") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let (name, version, metadata) = match parts.as_slice() {
        [m] => (*m, None, false),
        [m, "metadata"] => (*m, None, true),
        [m, "versions", v] => (*m, Some(*v), false),
        [m, "versions", v, "metadata"] => (*m, Some(*v), true),
        _ => return Ok(None),
    };
    if name.is_empty() || (predict && metadata) {
        return Ok(None);
    }
    let mut model = model(name, version)?;
    model.version = model.version.filter(|v| v != "0");
    Ok(Some(match (predict, metadata) {
        (true, _) => TfsRoute::Predict(model),
        (false, true) => TfsRoute::Metadata(model),
        (false, false) => TfsRoute::Status(model),
    }))
}

fn model<'a>(name: &'a str, version: Option<&'a str>) -> Result<ModelRef<'a>, Error> {
    Ok(ModelRef {
        name: percent_decode(name)?,
        version: version.map(percent_decode).transpose()?,
    })
}

/// Decodes %XX escapes (clients quote model names).
fn percent_decode(segment: &str) -> Result<Cow<'_, str>, Error> {
    if !segment.contains('%') {
        return Ok(Cow::Borrowed(segment));
    }
    let bad = || Error::invalid(format!("invalid percent-encoding in '{segment}'"));
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

    fn get(path: &str) -> Result<Route<'_>, u16> {
        route(Method::Get, path).map_err(|e| e.status)
    }

    fn post(path: &str) -> Result<Route<'_>, u16> {
        route(Method::Post, path).map_err(|e| e.status)
    }

    #[test]
    fn v2_paths() {
        assert_eq!(get("/v2"), Ok(Route::V2(V2Route::ServerMetadata)));
        assert_eq!(get("/v2/"), Ok(Route::V2(V2Route::ServerMetadata)));
        assert_eq!(get("/v2/health/ready"), Ok(Route::V2(V2Route::Ready)));
        assert_eq!(
            post("/v2/models/a%20b/versions/3/infer"),
            Ok(Route::V2(V2Route::Infer(model("a b", Some("3")))))
        );
        assert_eq!(
            get("/v2/models/m/ready"),
            Ok(Route::V2(V2Route::ModelReady(model("m", None))))
        );
        assert_eq!(get("/v2/models/m/stats/x"), Err(404));
        assert_eq!(
            get("/v2/models/stats"),
            Ok(Route::V2(V2Route::ModelStats(None)))
        );
        assert_eq!(
            get("/v2/models/m/versions/1/stats"),
            Ok(Route::V2(V2Route::ModelStats(Some(model("m", Some("1"))))))
        );
        assert_eq!(
            post("/v2/repository/index"),
            Ok(Route::V2(V2Route::RepositoryIndex))
        );
        assert_eq!(
            post("/v2/repository/models/a%2Fb/unload"),
            Ok(Route::V2(V2Route::Unload(Cow::Owned("a/b".into()))))
        );
        assert_eq!(
            get("/v2/models/m/versions/2/config"),
            Ok(Route::V2(V2Route::ModelConfig(model("m", Some("2")))))
        );
        assert_eq!(
            post("/v2/models/m/trace/setting"),
            Ok(Route::V2(V2Route::TraceSetting(Some(model("m", None)))))
        );
        assert_eq!(
            get("/v2/trace/setting"),
            Ok(Route::V2(V2Route::TraceSetting(None)))
        );
        assert_eq!(get("/v1/models/m/x"), Err(404));
        assert_eq!(get("/v2/models/%zz"), Err(400));
        assert_eq!(get("/v2/models/%ff"), Err(400));
    }

    #[test]
    fn shared_memory_paths() {
        let shm = |cuda, region: Option<&'static str>, action| {
            Ok(Route::V2(V2Route::SharedMemory {
                cuda,
                region: region.map(Cow::Borrowed),
                action,
            }))
        };
        assert_eq!(
            get("/v2/systemsharedmemory/status"),
            shm(false, None, ShmAction::Status)
        );
        assert_eq!(
            get("/v2/systemsharedmemory/region/in0/status"),
            shm(false, Some("in0"), ShmAction::Status)
        );
        assert_eq!(
            post("/v2/systemsharedmemory/region/in0/register"),
            shm(false, Some("in0"), ShmAction::Register)
        );
        assert_eq!(
            post("/v2/cudasharedmemory/unregister"),
            shm(true, None, ShmAction::Unregister)
        );
        assert_eq!(get("/v2/systemsharedmemory/region/in0/register"), Err(405));
        assert_eq!(post("/v2/systemsharedmemory/status"), Err(405));
        assert_eq!(get("/v2/systemsharedmemory/region/in0"), Err(404));
        assert_eq!(get("/v2/systemsharedmemory/bogus"), Err(404));
        assert_eq!(
            route(Method::Get, "/v2/systemsharedmemory/status")
                .unwrap()
                .group(),
            Some(Group::SharedMemory)
        );
    }

    #[test]
    fn tfs_paths() {
        assert_eq!(
            get("/v1/models/a"),
            Ok(Route::Tfs(TfsRoute::Status(model("a", None))))
        );
        assert_eq!(
            get("/v1/models/a/versions/0"),
            Ok(Route::Tfs(TfsRoute::Status(model("a", None))))
        );
        assert_eq!(
            get("/v1/models/a/versions/2/metadata"),
            Ok(Route::Tfs(TfsRoute::Metadata(model("a", Some("2")))))
        );
        assert_eq!(
            post("/v1/models/a:predict"),
            Ok(Route::Tfs(TfsRoute::Predict(model("a", None))))
        );
        assert_eq!(
            post("/v1/models/a/versions/3:predict"),
            Ok(Route::Tfs(TfsRoute::Predict(model("a", Some("3")))))
        );
        assert_eq!(post("/v1/models/a/metadata:predict"), Err(404));
        // Quoted names are decoded, as on V2; a bad escape is a 400.
        assert_eq!(
            post("/v1/models/my%20model/versions/3:predict"),
            Ok(Route::Tfs(TfsRoute::Predict(ModelRef {
                name: Cow::Owned("my model".into()),
                version: Some(Cow::Borrowed("3")),
            })))
        );
        assert_eq!(get("/v1/models/a%2"), Err(400));
    }

    #[test]
    fn one_method_per_path_and_a_405_that_says_which() {
        assert_eq!(get("/metrics"), Ok(Route::Metrics));
        assert_eq!(route(Method::Head, "/metrics"), Ok(Route::Metrics));
        let e = route(Method::Post, "/metrics").unwrap_err();
        assert_eq!(e.status, 405);
        assert_eq!(e.headers, vec![("Allow", "GET, HEAD".to_string())]);
        let e = route(Method::Get, "/V2/Models/Add_Sub/Infer").unwrap_err();
        assert_eq!(e.status, 404);
        let e = route(Method::Get, "/v2/models/Add_Sub/infer").unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (405, "/v2/models/Add_Sub/infer takes only POST")
        );
        assert_eq!(e.headers, vec![("Allow", "POST".to_string())]);
        assert_eq!(
            route(Method::Other, "/v1/models/a").unwrap_err().status,
            405
        );
        assert_eq!(route(Method::Post, "/v2/logging"), Ok(Route::Logging));
        let e = route(Method::Other, "/v2/logging").unwrap_err();
        assert_eq!(e.message, "/v2/logging takes only GET or POST");
        assert_eq!(e.headers, vec![("Allow", "GET, HEAD, POST".to_string())]);
    }
}
