//! Tenants and workspaces: the isolation boundary and the app/brand inside it.

use std::fmt;
use std::str::FromStr;

use crate::{ParseError, check_slug};

/// The id of a tenant. The bootstrap tenant is `default`; others get lower-case ULIDs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    pub const DEFAULT: &'static str = "default";

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        check_slug("tenant id", raw, 64)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn default_tenant() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A workspace's name, unique inside its tenant; the API addresses workspaces by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkspaceName(String);

impl WorkspaceName {
    pub const DEFAULT: &'static str = "default";

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        check_slug("workspace name", raw, 64)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn default_workspace() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkspaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a workspace is used for; data in `test` and `sandbox` is never mixed into `prod` views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    Prod,
    Sandbox,
    Test,
}

impl Environment {
    pub const ALL: [Environment; 3] = [Environment::Prod, Environment::Sandbox, Environment::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Prod => "prod",
            Environment::Sandbox => "sandbox",
            Environment::Test => "test",
        }
    }
}

impl FromStr for Environment {
    type Err = ParseError;

    fn from_str(raw: &str) -> Result<Self, ParseError> {
        Environment::ALL
            .into_iter()
            .find(|env| env.as_str() == raw)
            .ok_or_else(|| {
                ParseError::new(
                    "environment",
                    format!("{raw:?} is not one of prod, sandbox, test"),
                )
            })
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_slugs() {
        assert!(WorkspaceName::parse("shop-eu_2").is_ok());
        for bad in ["", "Shop", "-x", "a b", "é", &"x".repeat(65)] {
            let err = WorkspaceName::parse(bad).unwrap_err();
            assert_eq!(err.what, "workspace name", "{bad:?}");
        }
    }

    #[test]
    fn environments_round_trip() {
        for env in Environment::ALL {
            assert_eq!(env.as_str().parse::<Environment>(), Ok(env));
        }
        assert!("production".parse::<Environment>().is_err());
    }
}
