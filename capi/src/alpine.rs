//! Which Alpine release carries which Kubernetes: the one place both providers look it up.
//!
//! Alpine's community repository carries one Kubernetes minor per release branch (aports
//! `community/kubernetes`; `edge` moves on) and a cri-o that is not always the same minor, and
//! community support of a branch ends with the next release. So a node's packages can only be
//! pinned to the Machine's Kubernetes minor on a release that carries it: the bootstrap provider
//! refuses an impossible pair before any machine launches, and both providers default the release
//! from the Machine's version (the image lookup and the apk repositories then agree). Other minors
//! come from an extra package repository (KubeZero builds its own Alpine packages of Kubernetes,
//! `https://cdn.zero-downtime.net/alpine/v<release>/kubezero`): with one, any minor is accepted and
//! its packages, cri-o included, are pinned to that minor.
//!
//! The table below was read from the branches' package indexes (pkgs.alpinelinux.org, 2026-12);
//! Alpine 3.21 and older are left out: their Kubernetes minors are out of upstream support, and
//! before 3.21 no stable branch carries cri-o.

/// One Alpine release and the minors of its community repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlpineRelease {
    /// Release branch, e.g. `3.23`.
    pub release: &'static str,
    /// Kubernetes minor of `community/kubernetes` (kubelet, kubeadm, kubectl).
    pub kubernetes: &'static str,
    /// cri-o minor of `community/cri-o`.
    pub cri_o: &'static str,
}

/// The supported Alpine releases, oldest first.
pub const RELEASES: &[AlpineRelease] = &[
    AlpineRelease {
        release: "3.22",
        kubernetes: "1.33",
        cri_o: "1.32",
    },
    AlpineRelease {
        release: "3.23",
        kubernetes: "1.34",
        cri_o: "1.34",
    },
    AlpineRelease {
        release: "3.24",
        kubernetes: "1.36",
        cri_o: "1.36",
    },
];

/// The rolling development branch: whatever it carries today, nothing is checked.
pub const EDGE: &str = "edge";

/// What a node installs: the release its repositories point at and the minors its packages are
/// pinned to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Alpine release (`3.23`) or `edge`.
    pub release: String,
    /// Minor of kubelet, kubeadm and kubectl (`1.34`).
    pub kubernetes_minor: String,
    /// Minor of cri-o.
    pub cri_o_minor: String,
}

/// Why a Kubernetes version cannot be installed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not `v<major>.<minor>[.<patch>...]`.
    #[error("invalid Kubernetes version {0:?}: expected v<major>.<minor>.<patch>")]
    InvalidVersion(String),
    /// The release carries another minor and no extra repository is configured.
    #[error(
        "Alpine {release} carries Kubernetes {carried} (cri-o {cri_o}), not {wanted}: use Alpine {}, or add a \
         package repository that builds Kubernetes {wanted} (spec.alpine.repositories)",
        releases_with(wanted)
    )]
    NotCarried {
        /// The release asked for.
        release: String,
        /// The minor it carries.
        carried: String,
        /// Its cri-o minor.
        cri_o: String,
        /// The minor asked for.
        wanted: String,
    },
    /// No supported release carries the minor and no extra repository is configured.
    #[error(
        "no supported Alpine release carries Kubernetes {wanted} ({}): use one of those minors, or add a \
         package repository that builds Kubernetes {wanted} (spec.alpine.repositories)",
        carried()
    )]
    NoRelease {
        /// The minor asked for.
        wanted: String,
    },
    /// The release is not in [`RELEASES`] and no extra repository is configured.
    #[error(
        "Alpine {release} is not supported ({}); add the package repository your nodes install Kubernetes from \
         (spec.alpine.repositories) to use it anyway",
        carried()
    )]
    UnknownRelease {
        /// The release asked for.
        release: String,
    },
}

fn releases_with(minor: &str) -> String {
    let with: Vec<&str> = RELEASES
        .iter()
        .filter(|r| r.kubernetes == minor)
        .map(|r| r.release)
        .collect();
    if with.is_empty() {
        "a release that carries it (none does today)".to_owned()
    } else {
        with.join(" or ")
    }
}

fn carried() -> String {
    RELEASES
        .iter()
        .map(|r| format!("{} carries {}", r.release, r.kubernetes))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `v1.34.2` → `1.34`. Pure.
pub fn kubernetes_minor(version: &str) -> Result<String, VersionError> {
    let invalid = || VersionError::InvalidVersion(version.to_owned());
    let core = version
        .strip_prefix('v')
        .unwrap_or(version)
        .split(['-', '+'])
        .next()
        .unwrap_or_default();
    let mut parts = core.split('.');
    let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !numeric(major) || !numeric(minor) || !parts.all(numeric) {
        return Err(invalid());
    }
    Ok(format!("{major}.{minor}"))
}

/// The newest supported release.
pub fn newest_release() -> &'static str {
    RELEASES.last().map_or(EDGE, |r| r.release)
}

/// The release a node of `kubernetes_version` defaults to: the one carrying its minor, else the
/// newest (its packages then come from an extra repository). Pure.
pub fn default_release(kubernetes_version: &str) -> Result<&'static str, VersionError> {
    let minor = kubernetes_minor(kubernetes_version)?;
    Ok(RELEASES
        .iter()
        .find(|r| r.kubernetes == minor)
        .map_or(newest_release(), |r| r.release))
}

/// What a node of `kubernetes_version` installs on `release` (empty: defaulted from the version),
/// with or without an extra package repository. Pure.
pub fn select(
    release: &str,
    kubernetes_version: &str,
    extra_repository: bool,
) -> Result<Selection, VersionError> {
    let minor = kubernetes_minor(kubernetes_version)?;
    let own = |cri_o: &str, release: &str| Selection {
        release: release.to_owned(),
        kubernetes_minor: minor.clone(),
        cri_o_minor: cri_o.to_owned(),
    };
    if release == EDGE {
        return Ok(own(&minor, EDGE));
    }
    let known = if release.is_empty() {
        match RELEASES.iter().find(|r| r.kubernetes == minor) {
            Some(known) => Some(known),
            None if extra_repository => RELEASES.last(),
            None => return Err(VersionError::NoRelease { wanted: minor }),
        }
    } else {
        RELEASES.iter().find(|r| r.release == release)
    };
    match known {
        Some(known) if known.kubernetes == minor => Ok(own(known.cri_o, known.release)),
        // An extra repository builds the minor (KubeZero-style): cri-o of the same minor from it.
        Some(known) if extra_repository => Ok(own(&minor, known.release)),
        Some(known) => Err(VersionError::NotCarried {
            release: known.release.to_owned(),
            carried: known.kubernetes.to_owned(),
            cri_o: known.cri_o.to_owned(),
            wanted: minor,
        }),
        None if extra_repository => Ok(own(&minor, release)),
        None => Err(VersionError::UnknownRelease {
            release: release.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_defaults_from_the_kubernetes_minor() {
        let selected = select("", "v1.34.1", false).unwrap();
        assert_eq!(
            selected,
            Selection {
                release: "3.23".into(),
                kubernetes_minor: "1.34".into(),
                cri_o_minor: "1.34".into()
            }
        );
        assert_eq!(default_release("v1.34.1"), Ok("3.23"));
        assert_eq!(
            default_release("v1.35.0"),
            Ok("3.24"),
            "no release carries it: the newest"
        );
        let older = select("", "v1.33.4", false).unwrap();
        assert_eq!(
            (older.release.as_str(), older.cri_o_minor.as_str()),
            ("3.22", "1.32"),
            "3.22 pairs Kubernetes 1.33 with cri-o 1.32"
        );
    }

    #[test]
    fn an_impossible_pair_is_refused_with_what_to_do() {
        let refused = select("3.22", "v1.34.1", false).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "Alpine 3.22 carries Kubernetes 1.33 (cri-o 1.32), not 1.34: use Alpine 3.23, or add a package \
             repository that builds Kubernetes 1.34 (spec.alpine.repositories)"
        );
        assert!(matches!(
            select("", "v1.35.2", false),
            Err(VersionError::NoRelease { .. })
        ));
        assert!(matches!(
            select("3.19", "v1.28.4", false),
            Err(VersionError::UnknownRelease { .. })
        ));
        assert!(matches!(
            select("3.23", "1.34", false).map(|s| s.release),
            Ok(release) if release == "3.23"
        ));
        assert!(matches!(
            select("3.23", "latest", false),
            Err(VersionError::InvalidVersion(_))
        ));
    }

    #[test]
    fn an_extra_repository_builds_other_minors_and_edge_is_not_checked() {
        let kubezero = select("3.22", "v1.34.1", true).unwrap();
        assert_eq!(
            (
                kubezero.release.as_str(),
                kubezero.kubernetes_minor.as_str(),
                kubezero.cri_o_minor.as_str()
            ),
            ("3.22", "1.34", "1.34")
        );
        assert_eq!(select("", "v1.35.0", true).unwrap().release, "3.24");
        assert_eq!(select("3.19", "v1.28.0", true).unwrap().release, "3.19");
        assert_eq!(select("edge", "v1.37.0", false).unwrap().cri_o_minor, "1.37");
    }
}
