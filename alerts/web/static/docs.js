// Swagger UI over /openapi.json; the session cookie authenticates its requests.
window.SwaggerUIBundle({url: '/openapi.json', dom_id: '#swagger-ui', deepLinking: true});
