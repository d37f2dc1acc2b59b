//! Triton's restricted APIs: each group of endpoints may demand one header (REST) or one
//! metadata key (gRPC, prefixed `triton-grpc-protocol-`) with one exact value. A request
//! without it is refused before anything else looks at it.

use std::fmt;

/// The API groups, with Triton's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Health,
    Metadata,
    Inference,
    SharedMemory,
    ModelConfig,
    ModelRepository,
    Statistics,
    Trace,
    Logging,
}

impl Group {
    pub const ALL: [Group; 9] = [
        Group::Health,
        Group::Metadata,
        Group::Inference,
        Group::SharedMemory,
        Group::ModelConfig,
        Group::ModelRepository,
        Group::Statistics,
        Group::Trace,
        Group::Logging,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Group::Health => "health",
            Group::Metadata => "metadata",
            Group::Inference => "inference",
            Group::SharedMemory => "shared-memory",
            Group::ModelConfig => "model-config",
            Group::ModelRepository => "model-repository",
            Group::Statistics => "statistics",
            Group::Trace => "trace",
            Group::Logging => "logging",
        }
    }
}

/// The header (or metadata key) and value each restricted group demands.
#[derive(Clone, Default)]
pub struct Restrictions {
    demanded: [Option<(String, Vec<u8>)>; Group::ALL.len()],
}

// The values are secrets: never printed.
impl fmt::Debug for Restrictions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<(&str, &str)> = Group::ALL
            .iter()
            .zip(&self.demanded)
            .filter_map(|(g, d)| d.as_ref().map(|(header, _)| (g.name(), header.as_str())))
            .collect();
        f.debug_struct("Restrictions")
            .field("groups", &groups)
            .finish()
    }
}

impl Restrictions {
    /// Parses Triton's `<group>[,<group>…]:<header>=<value>` specs (one per flag). `prefix` goes
    /// before each header name (gRPC's `triton-grpc-protocol-`); header names are lowercased,
    /// since HTTP/2 metadata keys are lowercase and HTTP/1 header names match case-blind.
    pub fn parse(specs: &[String], prefix: &str, flag: &str) -> Result<Restrictions, String> {
        let mut out = Restrictions::default();
        for spec in specs {
            let bad = || format!("--{flag} '{spec}': expected <api>[,<api>...]:<header>=<value>");
            let (groups, pair) = spec.split_once(':').ok_or_else(bad)?;
            let (header, value) = pair.split_once('=').ok_or_else(bad)?;
            if groups.is_empty() || header.is_empty() || value.is_empty() {
                return Err(bad());
            }
            if !header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "--{flag}: header name '{header}' is not a valid header name"
                ));
            }
            for name in groups.split(',') {
                let i = Group::ALL
                    .iter()
                    .position(|g| g.name() == name)
                    .ok_or_else(|| {
                        let names: Vec<&str> = Group::ALL.iter().map(|g| g.name()).collect();
                        format!(
                            "--{flag}: unknown restricted API '{name}' (known: {})",
                            names.join(", ")
                        )
                    })?;
                if out.demanded[i].is_some() {
                    return Err(format!(
                        "--{flag}: restricted API '{name}' can not be specified in multiple \
                         config groups"
                    ));
                }
                let header = format!("{prefix}{}", header.to_ascii_lowercase());
                out.demanded[i] = Some((header, value.as_bytes().to_vec()));
            }
        }
        Ok(out)
    }

    /// `Err(header)` when `group` demands a header the request does not carry with the exact
    /// value; `header` looks one up by its (lowercase) name.
    pub fn check<'h>(
        &self,
        group: Group,
        header: impl FnOnce(&str) -> Option<&'h [u8]>,
    ) -> Result<(), &str> {
        let i = Group::ALL.iter().position(|g| *g == group).unwrap_or(0);
        match &self.demanded[i] {
            None => Ok(()),
            Some((name, value)) => match header(name) {
                Some(given) if same(given, value) => Ok(()),
                _ => Err(name),
            },
        }
    }

    pub fn is_restricted(&self, group: Group) -> bool {
        self.check(group, |_| None).is_err()
    }
}

/// Byte equality whose time depends on the lengths only, not on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the compiler from turning the fold back into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_triton_specs_and_checks_exact_values() {
        let r = Restrictions::parse(
            &specs(&[
                "model-repository,trace:Admin-Key=s3cret",
                "inference:infer-key=v",
            ]),
            "",
            "http-restricted-api",
        )
        .unwrap();
        let with = |value: &'static [u8]| move |name: &str| (name == "admin-key").then_some(value);
        assert_eq!(r.check(Group::ModelRepository, with(b"s3cret")), Ok(()));
        assert_eq!(r.check(Group::Trace, with(b"s3cret")), Ok(()));
        assert_eq!(
            r.check(Group::ModelRepository, with(b"s3cre")),
            Err("admin-key")
        );
        assert_eq!(
            r.check(Group::ModelRepository, with(b"s3creT")),
            Err("admin-key")
        );
        assert_eq!(r.check(Group::ModelRepository, |_| None), Err("admin-key"));
        assert_eq!(r.check(Group::Health, |_| None), Ok(()));
        assert!(r.is_restricted(Group::Inference) && !r.is_restricted(Group::Logging));
        assert!(!format!("{r:?}").contains("s3cret"));

        let grpc =
            Restrictions::parse(&specs(&["health:k=v"]), "triton-grpc-protocol-", "g").unwrap();
        assert_eq!(
            grpc.check(Group::Health, |_| None),
            Err("triton-grpc-protocol-k")
        );

        for bad in [
            "inference",
            "inference:k",
            "inference:=v",
            ":k=v",
            "infer:k=v",
            "trace:k v=1",
        ] {
            assert!(
                Restrictions::parse(&specs(&[bad]), "", "f").is_err(),
                "{bad}"
            );
        }
        let twice = Restrictions::parse(&specs(&["trace:a=1", "trace:b=2"]), "", "f");
        assert!(twice.unwrap_err().contains("multiple config groups"));
    }
}
