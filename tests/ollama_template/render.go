// Renders an Ollama TEMPLATE with Go's text/template, the engine Ollama uses, on the data shape Ollama passes
// for chat requests (.Messages of {Role, Content}, .System, .Prompt, .Response, .Tools).
// stdin: {"template": "...", "messages": [{"role": "...", "content": "..."}]}; stdout: the rendered prompt.
package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type Values struct {
	Messages []Message
	System   string
	Prompt   string
	Response string
	Tools    []any
}

func main() {
	var in struct {
		Template string    `json:"template"`
		Messages []Message `json:"messages"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	tmpl := template.Must(template.New("").Option("missingkey=zero").Parse(in.Template))
	if err := tmpl.Execute(os.Stdout, Values{Messages: in.Messages}); err != nil {
		panic(err)
	}
}
