//! BIDS maps: the names of scans whose NIfTI files have no BIDS names (source 4 of
//! [`super::sources`]), in the format NRG's `dcm2bids-session` reads
//! (NrgXnat/docker-images, `dcm2bids-session`; its site map at the configuration
//! `/data/config/bids/bidsmap`, the project's at `/data/projects/{p}/config/bids/bidsmap`):
//! a JSON list of `{"series_description": ..., "bidsname": ...}`, matched to a scan's series
//! description without regard to case (its type when it has none); the project's entries win
//! over the site's.

use std::collections::HashMap;

/// Series descriptions (lower case) to BIDS names (`T1w`, `task-rest_bold`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BidsMap {
    names: HashMap<String, String>,
}

#[derive(serde::Deserialize)]
struct Entry {
    series_description: String,
    bidsname: String,
}

impl BidsMap {
    /// The map in `text`; an error says what is wrong with it.
    pub fn parse(text: &str) -> Result<BidsMap, String> {
        let entries: Vec<Entry> = serde_json::from_str(text).map_err(|e| {
            format!("not a BIDS map (a JSON list of {{\"series_description\", \"bidsname\"}}): {e}")
        })?;
        let mut names = HashMap::new();
        for e in entries {
            let name = e.bidsname.trim();
            let valid = !name.is_empty()
                && name.split('_').all(|part| {
                    !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !valid {
                return Err(format!(
                    "the bidsname {:?} (for {:?}) is no BIDS name such as T1w or task-rest_bold",
                    e.bidsname, e.series_description
                ));
            }
            names.insert(e.series_description.trim().to_lowercase(), name.to_string());
        }
        Ok(BidsMap { names })
    }

    /// `self` with `over`'s entries in place of its own for the same series.
    pub fn overridden_by(mut self, over: BidsMap) -> BidsMap {
        self.names.extend(over.names);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The BIDS name of a scan of this series description (its type when it has none).
    pub fn name_of(&self, series_description: &str, scan_type: &str) -> Option<&str> {
        let key = match series_description.trim() {
            "" => scan_type.trim(),
            s => s,
        };
        self.names.get(&key.to_lowercase()).map(String::as_str)
    }
}

/// The BIDS map XNAT's configuration service holds for `project`: the site's
/// (`/data/config/bids/bidsmap`) with the project's entries over it, as `dcm2bids-session`
/// merges them; `None` when there is neither. One that cannot be read or parsed is left out,
/// and said so.
pub async fn configured(api: &dyn crate::xnat::XnatApi, project: &str) -> Option<BidsMap> {
    let mut merged: Option<BidsMap> = None;
    for scope in [None, Some(project)] {
        let at = crate::xnat::config_path(scope, "bids", "bidsmap");
        match api.config(scope, "bids", "bidsmap").await {
            Ok(None) => {}
            Ok(Some(text)) => match BidsMap::parse(&text) {
                Ok(map) => merged = Some(merged.unwrap_or_default().overridden_by(map)),
                Err(e) => tracing::warn!("BIDS view: the BIDS map at {at} is left out: {e}"),
            },
            Err(e) => tracing::warn!("BIDS view: cannot read the BIDS map at {at}: {e}"),
        }
    }
    merged.filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_matches_series_without_case_and_the_type_when_there_is_no_series() {
        let map = BidsMap::parse(
            r#"[{"series_description": "T1_MPRAGE", "bidsname": "T1w"},
                {"series_description": "rsfMRI", "bidsname": "task-rest_bold"}]"#,
        )
        .unwrap();
        assert_eq!(map.name_of("t1_mprage", "x"), Some("T1w"));
        assert_eq!(map.name_of("", "RSFMRI"), Some("task-rest_bold"));
        assert_eq!(map.name_of("Localizer", "rsfMRI"), None);
        let project = BidsMap::parse(r#"[{"series_description": "t1_mprage", "bidsname": "T2w"}]"#);
        let both = map.overridden_by(project.unwrap());
        assert_eq!(both.name_of("T1_MPRAGE", ""), Some("T2w"));
        assert_eq!(both.name_of("rsfMRI", ""), Some("task-rest_bold"));
    }

    #[test]
    fn a_bad_map_says_what_is_wrong() {
        assert!(BidsMap::parse("{}").unwrap_err().contains("not a BIDS map"));
        for bad in ["", "../T1w", "T1w_", "a b"] {
            let text = format!(r#"[{{"series_description": "x", "bidsname": "{bad}"}}]"#);
            assert!(
                BidsMap::parse(&text).unwrap_err().contains("no BIDS name"),
                "{bad}"
            );
        }
    }
}
