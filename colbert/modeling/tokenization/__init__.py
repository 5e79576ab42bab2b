from colbert.modeling.tokenization.doc_tokenization import DocTokenizer
from colbert.modeling.tokenization.query_tokenization import QueryTokenizer

__all__ = ["DocTokenizer", "QueryTokenizer"]
