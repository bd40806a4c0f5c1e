"""HTTP plumbing shared by the JSON API and the pages: problem documents, middleware, OpenAPI, SSE, uploads and
downloads. Nothing here knows the domain; services never import it."""
