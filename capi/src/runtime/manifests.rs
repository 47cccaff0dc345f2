//! YAML rendering of generated CRDs (`crds` subcommand, `make generate`, and the drift test).

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Errors while rendering or writing manifests.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A CRD could not be turned into YAML.
    #[error("failed to render CRD {name} as YAML: {source}")]
    Render {
        /// CRD name.
        name: String,
        /// Serializer error.
        source: serde_saphyr::SerializeError,
    },
    /// A file could not be written.
    #[error("failed to write {path}: {source}")]
    Write {
        /// File path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
}

/// File name of a CRD in `config/*/crd/bases`: `<group>_<plural>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// One CRD as a YAML document (no leading `---`).
pub fn crd_to_yaml(crd: &CustomResourceDefinition) -> Result<String, ManifestError> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    serde_saphyr::to_string(crd).map_err(|source| ManifestError::Render { name, source })
}

/// All CRDs as one multi-document YAML stream.
pub fn crds_to_yaml(crds: &[CustomResourceDefinition]) -> Result<String, ManifestError> {
    let documents = crds.iter().map(crd_to_yaml).collect::<Result<Vec<_>, _>>()?;
    Ok(documents
        .iter()
        .map(|document| format!("---\n{document}"))
        .collect())
}

/// Writes one `<group>_<plural>.yaml` file per CRD into `dir` (created if needed).
pub fn write_crds(dir: &Path, crds: &[CustomResourceDefinition]) -> Result<(), ManifestError> {
    std::fs::create_dir_all(dir).map_err(|source| ManifestError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    for crd in crds {
        let path = dir.join(file_name(crd));
        std::fs::write(&path, crd_to_yaml(crd)?).map_err(|source| ManifestError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// The `crds` subcommand: prints the CRDs, or writes them into `--output-dir`.
pub fn crds_command(args: &super::CrdsArgs, crds: &[CustomResourceDefinition]) -> Result<(), ManifestError> {
    match &args.output_dir {
        Some(dir) => write_crds(dir, crds),
        None => {
            use std::io::Write;
            let yaml = crds_to_yaml(crds)?;
            std::io::stdout()
                .lock()
                .write_all(yaml.as_bytes())
                .map_err(|source| ManifestError::Write {
                    path: "standard output".to_string(),
                    source,
                })
        }
    }
}

/// Names (`<plural>.<group>`) of the given CRDs.
pub fn crd_names(crds: &[CustomResourceDefinition]) -> Vec<String> {
    crds.iter().filter_map(|crd| crd.metadata.name.clone()).collect()
}
