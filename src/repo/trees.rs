//! Trees by id, in a given domain: the cache-then-verify step, written once.
//!
//! The local tree cache does not record which domain a tree came from, and anyone whose
//! database this is could have put bytes there: a cached tree is used only when it hashes to
//! its id under the id key of a domain this client holds (restricted to the domain the caller
//! needs, when it knows one). Otherwise the tree is read from storage. [`Repository::load_tree`]
//! takes it from the cache this way; prune, which must know the domain a tree verifies in
//! (every blob below a snapshot's root belongs to the root's domain, issue 15) and may find a
//! tree only in the tables of packs it has condemned, loads through
//! [`Repository::load_tree_in`].

use super::{BlobLocation, RepoError, Repository};
use crate::format::tree::Tree;
use crate::id::Id;

impl Repository {
    /// A tree's plaintext from the local cache and the domain it verifies in (only `domain`,
    /// when given); `None` when the cache lacks it or its bytes do not verify.
    pub fn cached_tree_verified(&self, id: &Id, domain: Option<Id>) -> Result<Option<(Id, Vec<u8>)>, RepoError> {
        let Some(bytes) = self.db().cached_tree(id)? else { return Ok(None) };
        let found = self.domain_naming(&bytes, id).filter(|d| domain.is_none_or(|want| want == *d));
        Ok(found.map(|d| (d, bytes)))
    }

    /// A tree and the domain it verifies in (only `domain`, when given): from the local cache,
    /// else the first stored copy that reads back and verifies, among the index's copies and
    /// `extra` (locations the index no longer lists, such as a condemned pack's table). Each
    /// copy is read exactly (no fallback): which one verifies decides the domain. `None` when
    /// no copy is known.
    pub fn load_tree_in(
        &self,
        id: &Id,
        domain: Option<Id>,
        extra: &[BlobLocation],
    ) -> Result<Option<(Id, Tree)>, RepoError> {
        let decode = |bytes: &[u8]| Tree::decode(bytes).map_err(RepoError::format(format!("tree {id}")));
        if let Some((found, bytes)) = self.cached_tree_verified(id, domain)? {
            return Ok(Some((found, decode(&bytes)?)));
        }
        let mut copies = self.db().blob_locations(id)?;
        copies.extend_from_slice(extra);
        copies.retain(|c| domain.is_none_or(|want| want == c.domain));
        let mut failure = None;
        for copy in &copies {
            match self.read_blob(copy, super::Copies::Exactly) {
                Ok(bytes) => return Ok(Some((copy.domain, decode(&bytes)?))),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::id::Id;
    use crate::test_kit::{backup, fixture};

    #[test]
    fn load_tree_in_finds_the_domain_and_refuses_another() {
        let fx = fixture();
        let root = backup(&fx).snapshot.tree;
        let own = fx.repo.keys().domain;
        let (domain, tree) = fx.repo.load_tree_in(&root, None, &[]).unwrap().expect("stored");
        assert_eq!(domain, own);
        assert_eq!(tree, fx.repo.load_tree(&root).unwrap());
        assert!(fx.repo.cached_tree_verified(&root, Some(own)).unwrap().is_some());
        // No copy in another domain: not found, rather than a copy that would not verify there.
        let other = Id([3; 32]);
        assert!(fx.repo.cached_tree_verified(&root, Some(other)).unwrap().is_none());
        assert!(fx.repo.load_tree_in(&root, Some(other), &[]).unwrap().is_none());
        assert!(fx.repo.load_tree_in(&Id([4; 32]), None, &[]).unwrap().is_none());
    }
}
