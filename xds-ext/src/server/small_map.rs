//! A map for the handful of resources one stream carries (six at most for a
//! well-behaved proxy), kept as a vector sorted by name.
//!
//! Why not `BTreeMap`: its first insert allocates a node for 11 entries,
//! which for a stream's resource states was 1.7 KiB, and as much again for
//! its status view: a third of what a stream cost at 10 000 streams.

use serde::ser::{Serialize, SerializeMap, Serializer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmallMap<V>(Vec<(String, V)>);

impl<V> Default for SmallMap<V> {
    fn default() -> Self {
        SmallMap(Vec::new())
    }
}

impl<V> SmallMap<V> {
    pub fn get(&self, name: &str) -> Option<&V> {
        self.position(name).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        self.position(name).ok().map(|i| &mut self.0[i].1)
    }

    /// The value of `name`, inserted as `V::default()` if absent.
    pub fn entry(&mut self, name: &str) -> &mut V
    where
        V: Default,
    {
        let i = match self.position(name) {
            Ok(i) => i,
            Err(i) => {
                // One at a time: most streams carry one resource, and a
                // vector's first growth would make room for four.
                self.0.reserve_exact(1);
                self.0.insert(i, (name.to_owned(), V::default()));
                i
            }
        };
        &mut self.0[i].1
    }

    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.position(name) {
            self.0.remove(i);
        }
    }

    /// Entries in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }
}

impl<V> FromIterator<(String, V)> for SmallMap<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(items: I) -> Self {
        let mut entries: Vec<(String, V)> = items.into_iter().collect();
        // Sorted and unique by name; of duplicates the last one stays, as in a map.
        entries.reverse();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, kept| later.0 == kept.0);
        SmallMap(entries)
    }
}

/// Serialized as a JSON object, like the map it stands for.
impl<V: Serialize> Serialize for SmallMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map_in_name_order() {
        let mut map: SmallMap<u32> =
            [("b".to_owned(), 1), ("a".to_owned(), 2), ("b".to_owned(), 3)].into_iter().collect();
        assert_eq!(map.iter().collect::<Vec<_>>(), [("a", &2), ("b", &3)]);
        *map.entry("c") += 4;
        *map.entry("a") += 1;
        assert_eq!(map.get("a"), Some(&3));
        map.remove("b");
        assert_eq!(map.get("b"), None);
        assert_eq!(serde_json::to_string(&map).unwrap(), r#"{"a":3,"c":4}"#);
    }
}
